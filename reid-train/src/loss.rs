//! Re-ID losses: label-smoothed cross-entropy and batch-hard triplet (margin or soft-margin).

use candle_core::{DType, Result, Tensor, D};

/// Mean cross-entropy with label smoothing ε (Szegedy et al.; BoT uses ε = 0.1):
/// −Σ_c q_c log p_c with q = (1 − ε)·onehot + ε / C.
pub fn cross_entropy_smooth(logits: &Tensor, labels: &Tensor, eps: f64) -> Result<Tensor> {
    logits.dims2()?;
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let labels = labels.to_dtype(DType::U32)?;
    let nll = logp.gather(&labels.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?;
    if eps == 0.0 {
        return nll.mean_all();
    }
    let uniform = (logp.mean(D::Minus1)?.neg()? * eps)?;
    ((nll * (1.0 - eps))? + uniform)?.mean_all()
}

/// Pairwise Euclidean distances [N, N] (clamped away from 0 before the square root so the
/// gradient stays finite).
pub fn pairwise_euclidean(x: &Tensor) -> Result<Tensor> {
    let sq = x.sqr()?.sum_keepdim(D::Minus1)?;
    let d2 = (sq.broadcast_add(&sq.t()?)? - (x.matmul(&x.t()?)? * 2.0)?)?;
    d2.clamp(1e-12, f64::MAX)?.sqrt()
}

/// Batch-hard triplet loss (Hermans et al.): for each anchor, the farthest positive and the
/// nearest negative in the batch. `margin = None` gives the soft margin log(1 + exp(ap − an)).
pub fn triplet_batch_hard(feats: &Tensor, pids: &[i64], margin: Option<f64>) -> Result<Tensor> {
    let n = pids.len();
    let dist = pairwise_euclidean(feats)?;
    let mut same = vec![0f32; n * n];
    for i in 0..n {
        for j in 0..n {
            same[i * n + j] = (pids[i] == pids[j]) as u8 as f32;
        }
    }
    let same = Tensor::from_vec(same, (n, n), feats.device())?;
    // hardest positive: max over same-pid entries (distances are ≥ 0, others masked to 0)
    let ap = (&dist * &same)?.max(D::Minus1)?;
    // hardest negative: min over other-pid entries (same-pid pushed far away)
    let big = dist.max_all()?.detach().to_scalar::<f32>()? as f64 + 1.0;
    let an = (&dist + (&same * big)?)?.min(D::Minus1)?;
    let diff = (ap - an)?;
    match margin {
        Some(m) => (diff + m)?.relu()?.mean_all(),
        // log(1 + e^x) = relu(x) + log(1 + e^−|x|), stable for large |x|
        None => (diff.relu()? + (diff.abs()?.neg()?.exp()? + 1.0)?.log()?)?.mean_all(),
    }
}

/// Center loss (Wen et al. 2016, as Bag of Tricks uses it): the mean over the batch of
/// ‖f_i − c_{y_i}‖², pulling each feature towards its identity's learned centre.
pub fn center_loss(feats: &Tensor, centers: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let c = centers.index_select(&labels.to_dtype(DType::U32)?, 0)?;
    (feats - c)?.sqr()?.sum(D::Minus1)?.mean_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn smoothed_cross_entropy_by_hand() {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[1.0f32, 2.0, 0.5], [0.0, 0.0, 3.0]], &dev).unwrap();
        let labels = Tensor::new(&[1u32, 0], &dev).unwrap();
        let got = cross_entropy_smooth(&logits, &labels, 0.1)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let rows = [[1.0f64, 2.0, 0.5], [0.0, 0.0, 3.0]];
        let mut want = 0.0;
        for (r, &y) in rows.iter().zip(&[1usize, 0]) {
            let lse = r.iter().map(|v| v.exp()).sum::<f64>().ln();
            let logp: Vec<f64> = r.iter().map(|v| v - lse).collect();
            want += -(0.9 * logp[y] + 0.1 / 3.0 * logp.iter().sum::<f64>());
        }
        want /= 2.0;
        assert!((got as f64 - want).abs() < 1e-6, "{got} vs {want}");
        let plain = cross_entropy_smooth(&logits, &labels, 0.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let ce = candle_nn::loss::cross_entropy(&logits, &labels)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((plain - ce).abs() < 1e-6);
    }

    #[test]
    fn triplet_by_hand() {
        let dev = Device::Cpu;
        // 1-D features: ids A at 0 and 1, B at 3 and 5
        let f = Tensor::new(&[[0.0f32], [1.0], [3.0], [5.0]], &dev).unwrap();
        let pids = [0, 0, 1, 1];
        // anchor 0: ap 1, an 3; anchor 1: ap 1, an 2; anchor 2: ap 2, an 2; anchor 3: ap 2, an 4
        let m = triplet_batch_hard(&f, &pids, Some(0.3))
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let want = [
            (1.0f64 - 3.0 + 0.3).max(0.0),
            (1.0f64 - 2.0 + 0.3).max(0.0),
            0.3,
            (2.0f64 - 4.0 + 0.3).max(0.0),
        ];
        assert!(
            (m as f64 - want.iter().sum::<f64>() / 4.0).abs() < 1e-5,
            "{m}"
        );
        let s = triplet_batch_hard(&f, &pids, None)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let want: f64 = [-2.0f64, -1.0, 0.0, -2.0]
            .iter()
            .map(|x| (1.0 + x.exp()).ln())
            .sum::<f64>()
            / 4.0;
        assert!((s as f64 - want).abs() < 1e-5, "{s} vs {want}");
    }

    #[test]
    fn center_loss_by_hand() {
        let dev = Device::Cpu;
        let feats = Tensor::new(&[[1.0f32, 2.0], [0.0, -1.0], [3.0, 0.0]], &dev).unwrap();
        let centers = Tensor::new(&[[0.0f32, 0.0], [1.0, 1.0]], &dev).unwrap();
        let labels = Tensor::new(&[1u32, 0, 1], &dev).unwrap();
        // (0² + 1²) + (0² + 1²) + (2² + 1²) = 7, over 3 images.
        let v = center_loss(&feats, &centers, &labels)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((v - 7.0 / 3.0).abs() < 1e-6, "{v}");
    }
}
