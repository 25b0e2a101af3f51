//! Pooling built from differentiable ops (candle's `max_pool2d` has no backward when
//! kernel != stride, so the ResNet stem's 3×3/s2/p1 pool is composed here).

use candle_core::{Result, Tensor, D};

/// Max over a 3-wide, stride-2, pad-1 window along `dim` of a non-negative tensor.
/// Zero padding equals -inf padding because the input is post-ReLU.
fn max3_s2_p1_along(x: &Tensor, dim: usize) -> Result<Tensor> {
    let len = x.dim(dim)?;
    let out = (len - 1) / 2 + 1;
    // pad 1 on the left, and on the right enough to make the length even with ≥ out+1 pairs
    let right = if len % 2 == 0 { 1 } else { 2 };
    let padded = x.pad_with_zeros(dim, 1, right)?;
    let pairs = (len + 1 + right) / 2;
    let mut shape = padded.dims().to_vec();
    shape[dim] = pairs;
    shape.insert(dim + 1, 2);
    let paired = padded.reshape(shape)?;
    // pair j = (p[2j], p[2j+1]); window j = max(pair j, p[2j+2]) = max(pairmax j, first of pair j+1)
    let pair_max = paired.max(dim + 1)?.narrow(dim, 0, out)?;
    let next_first = paired
        .narrow(dim + 1, 0, 1)?
        .squeeze(dim + 1)?
        .narrow(dim, 1, out)?;
    pair_max.maximum(&next_first)
}

/// The ResNet stem pool: 3×3 window, stride 2, padding 1, on an NCHW post-ReLU tensor.
pub fn max_pool_3x3_s2_p1(x: &Tensor) -> Result<Tensor> {
    let w = max3_s2_p1_along(x, 3)?;
    max3_s2_p1_along(&w, 2)
}

/// Mean over H and W: NCHW → NC.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    x.reshape((n, c, h * w))?.mean(D::Minus1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Reference: direct window max with -inf padding.
    fn naive(x: &[f32], h: usize, w: usize) -> Vec<f32> {
        let (oh, ow) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
        let mut out = vec![f32::NEG_INFINITY; oh * ow];
        for i in 0..oh {
            for j in 0..ow {
                for di in 0..3 {
                    for dj in 0..3 {
                        let (y, xx) = ((2 * i + di) as isize - 1, (2 * j + dj) as isize - 1);
                        if y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < w {
                            let v = x[y as usize * w + xx as usize];
                            out[i * ow + j] = out[i * ow + j].max(v);
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_naive_pool_all_parities() {
        let dev = Device::Cpu;
        for (h, w) in [(8, 8), (7, 8), (8, 7), (9, 5), (6, 4)] {
            let data: Vec<f32> = (0..h * w)
                .map(|i| ((i * 7919 % 31) as f32 * 0.37).sin().abs())
                .collect();
            let x = Tensor::from_vec(data.clone(), (1, 1, h, w), &dev).unwrap();
            let y = max_pool_3x3_s2_p1(&x).unwrap();
            let got: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(got, naive(&data, h, w), "{h}x{w}");
        }
    }

    #[test]
    fn gradient_goes_to_the_window_max() {
        let dev = Device::Cpu;
        // distinct values: each output's gradient lands on exactly one input
        let data: Vec<f32> = (0..36).map(|i| ((i * 17) % 36) as f32).collect();
        let x = Var::from_vec(data.clone(), (1, 1, 6, 6), &dev).unwrap();
        let y = max_pool_3x3_s2_p1(x.as_tensor()).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        let gx: Vec<f32> = g.get(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let mut expect = vec![0f32; 36];
        for i in 0..3 {
            for j in 0..3 {
                let mut best = (f32::MIN, 0);
                for di in 0..3 {
                    for dj in 0..3 {
                        let (yy, xx) = ((2 * i + di) as isize - 1, (2 * j + dj) as isize - 1);
                        if (0..6).contains(&yy) && (0..6).contains(&xx) {
                            let k = yy as usize * 6 + xx as usize;
                            if data[k] > best.0 {
                                best = (data[k], k);
                            }
                        }
                    }
                }
                expect[best.1] += 1.0;
            }
        }
        assert_eq!(gx, expect);
    }
}
