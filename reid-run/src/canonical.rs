//! Byte-stable files: the same content always gives the same bytes, so that a file's sha256
//! (provenance `parent`, `deploy.json`'s `model_sha256`) identifies what it holds.
//!
//! A safetensors header is JSON whose metadata is a hash map, serialised in the map's
//! (randomised) iteration order: two writes of one model differed in their bytes. Here the
//! header is rewritten with every key sorted; the data section and its offsets do not move.

use std::collections::BTreeMap;

/// `bytes` (a safetensors file) with its header's keys sorted: the top level (tensor names and
/// `__metadata__`) and the metadata's own keys. Anything that is not a well-formed safetensors
/// header is an error naming what is wrong.
pub fn safetensors(bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    let n = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or("shorter than a safetensors header")?;
    let end = usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_add(8))
        .filter(|&e| e <= bytes.len())
        .ok_or("header length past the end of the file")?;
    let mut header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..end]).map_err(|e| format!("header: {e}"))?;
    if let Some(meta) = header.remove("__metadata__") {
        let sorted: BTreeMap<String, String> =
            serde_json::from_value(meta).map_err(|e| format!("header __metadata__: {e}"))?;
        header.insert(
            "__metadata__".into(),
            serde_json::to_value(sorted).map_err(|e| e.to_string())?,
        );
    }
    // serde_json keeps a map's insertion order when built with `preserve_order` (a dependency
    // of the report's crates turns it on): serialising the BTreeMap itself keeps keys sorted.
    let mut text = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    // the data section starts 8-aligned: pad the header with spaces, as safetensors does
    while (8 + text.len()) % 8 != 0 {
        text.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - end);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[end..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn key_order_does_not_change_the_bytes_and_data_stays() {
        let a = file(
            r#"{"__metadata__":{"z":"1","a":"2"},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
            &[1, 2, 3, 4, 5, 6, 7, 8],
        );
        let b = file(
            r#"{"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"__metadata__":{"a":"2","z":"1"},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            &[1, 2, 3, 4, 5, 6, 7, 8],
        );
        let (ca, cb) = (safetensors(a).unwrap(), safetensors(b).unwrap());
        assert_eq!(ca, cb);
        assert_eq!(&ca[ca.len() - 8..], &[1, 2, 3, 4, 5, 6, 7, 8]);
        let n = u64::from_le_bytes(ca[..8].try_into().unwrap()) as usize;
        assert_eq!((8 + n) % 8, 0, "data 8-aligned");
        let text = std::str::from_utf8(&ca[8..8 + n]).unwrap().trim_end();
        assert!(
            text.starts_with(r#"{"__metadata__":{"a":"2","z":"1"},"b":"#),
            "{text}"
        );
    }

    #[test]
    fn a_broken_header_is_an_error() {
        assert!(safetensors(vec![1, 2]).is_err());
        assert!(safetensors(file("{", &[])).is_err());
        let mut long = file("{}", &[]);
        long[0] = 200;
        assert!(safetensors(long).is_err());
    }
}
