//! Market-1501 naming: `PPPP_cCsS_FFFFFF_NN.jpg` (pid −1 = junk, 0 = distractor; cameras 1–6).
//! DukeMTMC-reID uses the same pattern (`PPPP_cC_fFFFFFFF.jpg`, cameras 1–8).

/// (pid, camid) from a Market-1501 / DukeMTMC-reID file name, `None` if it does not parse.
pub fn parse_name(file_name: &str) -> Option<(i64, i64)> {
    let (pid, rest) = file_name.split_once('_')?;
    let pid: i64 = pid.parse().ok()?;
    let rest = rest.strip_prefix('c')?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let cam: i64 = digits.parse().ok()?;
    if pid < -1 {
        return None;
    }
    Some((pid, cam))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_market_and_duke_names() {
        assert_eq!(parse_name("0002_c1s1_000451_03.jpg"), Some((2, 1)));
        assert_eq!(parse_name("-1_c3s2_012345_00.jpg"), Some((-1, 3)));
        assert_eq!(parse_name("0000_c6s4_001234_01.jpg"), Some((0, 6)));
        assert_eq!(parse_name("0005_c8_f0051487.jpg"), Some((5, 8)));
        assert_eq!(parse_name("Thumbs.db"), None);
        assert_eq!(parse_name("12_x1.jpg"), None);
    }
}
