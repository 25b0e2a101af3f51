//! Pooling. The ResNet stem's 3×3/s2/p1 max pool is one custom op on the CPU (forward and
//! backward in one pass each: the composed version made six full-size temporaries of the
//! largest activation of the network); elsewhere it is composed from differentiable ops
//! (candle's `max_pool2d` has no backward when kernel != stride).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::{f32_slice, Kernels};

fn out_len(len: usize) -> usize {
    (len - 1) / 2 + 1
}

/// The first maximum (row-major scan of the window, as PyTorch) of window (i, j) of a plane.
#[inline]
fn window_argmax(p: &[f32], h: usize, w: usize, i: usize, j: usize) -> (usize, f32) {
    let (mut best, mut at) = (f32::NEG_INFINITY, usize::MAX);
    for y in (2 * i).saturating_sub(1)..(2 * i + 2).min(h) {
        for x in (2 * j).saturating_sub(1)..(2 * j + 2).min(w) {
            let v = p[y * w + x];
            // a NaN wins too, so that it propagates
            if at == usize::MAX || v > best || v.is_nan() {
                best = v;
                at = y * w + x;
            }
        }
    }
    (at, best)
}

/// The larger of two values, NaN if either is (as the window scan: a NaN wins).
#[inline]
fn max_nan(a: f32, b: f32) -> f32 {
    if b > a || b.is_nan() {
        b
    } else {
        a
    }
}

/// The 3-wide, stride-2, pad-1 maxima of `src` (len `n`) into `dst` (len (n − 1) / 2 + 1).
#[inline]
fn max3_s2(src: &[f32], dst: &mut [f32]) {
    let n = src.len();
    for (j, d) in dst.iter_mut().enumerate() {
        let c = 2 * j;
        let mut m = src[c];
        if c > 0 {
            m = max_nan(m, src[c - 1]);
        }
        if c + 1 < n {
            m = max_nan(m, src[c + 1]);
        }
        *d = m;
    }
}

/// One plane's pool, separably: the row maxima (h × ow, in `rows`), then the column maxima.
/// The same values as the 3×3 window scan, in a fraction of its time (no per-window bounds).
fn max_pool_plane(p: &[f32], h: usize, w: usize, rows: &mut Vec<f32>, o: &mut [f32]) {
    let (oh, ow) = (out_len(h), out_len(w));
    rows.resize(h * ow, 0.0);
    for (src, dst) in p.chunks_exact(w).zip(rows.chunks_exact_mut(ow)) {
        max3_s2(src, dst);
    }
    for i in 0..oh {
        let c = 2 * i;
        let out = &mut o[i * ow..(i + 1) * ow];
        out.copy_from_slice(&rows[c * ow..(c + 1) * ow]);
        for r in [c.checked_sub(1), (c + 1 < h).then_some(c + 1)]
            .into_iter()
            .flatten()
        {
            for (d, &v) in out.iter_mut().zip(&rows[r * ow..(r + 1) * ow]) {
                *d = max_nan(*d, v);
            }
        }
    }
}

/// d[first maximum of window (i, j)] += gp[i, j] for one plane, by the row-major window scan
/// (the definition [`max_pool_grad_plane`] follows, and its path for planes holding a NaN).
fn scan_grad_plane(p: &[f32], (h, w): (usize, usize), gp: &[f32], d: &mut [f32]) {
    let (oh, ow) = (out_len(h), out_len(w));
    for i in 0..oh {
        for j in 0..ow {
            d[window_argmax(p, h, w, i, j).0] += gp[i * ow + j];
        }
    }
}

/// Per row of a plane, the value and column of each 3-wide window's first maximum (scratch of
/// [`max_pool_grad_plane`]).
#[derive(Default)]
struct RowMaxima {
    value: Vec<f32>,
    col: Vec<u32>,
}

/// d[first maximum of window (i, j)] += gp[i, j] for one plane. Separably, as the forward: the
/// first maximum of a row-major window scan is the leftmost maximum of the topmost row that
/// holds the window's maximum, so each row's window maxima and columns come first, then the
/// rows are compared top to bottom. Strict comparisons keep the first of equal values, as the
/// scan does; branch-free selects replace the scan's unpredictable branches (the scan was ~4 %
/// of a ResNet-18 256×128 step). A plane holding a NaN takes the scan (a NaN wins there).
fn max_pool_grad_plane(
    p: &[f32],
    (h, w): (usize, usize),
    gp: &[f32],
    d: &mut [f32],
    rows: &mut RowMaxima,
) {
    let (oh, ow) = (out_len(h), out_len(w));
    // checked 16 at a time without an early exit, so that it vectorises
    if p.chunks(16)
        .any(|c| c.iter().fold(false, |a, v| a | v.is_nan()))
    {
        return scan_grad_plane(p, (h, w), gp, d);
    }
    rows.value.resize(h * ow, 0.0);
    rows.col.resize(h * ow, 0);
    for ((src, val), col) in p
        .chunks_exact(w)
        .zip(rows.value.chunks_exact_mut(ow))
        .zip(rows.col.chunks_exact_mut(ow))
    {
        for (j, (v, at)) in val.iter_mut().zip(col.iter_mut()).enumerate() {
            let c = 2 * j;
            let (mut best, mut idx) = if c > 0 {
                (src[c - 1], c - 1)
            } else {
                (src[c], c)
            };
            if src[c] > best {
                (best, idx) = (src[c], c);
            }
            if c + 1 < w && src[c + 1] > best {
                (best, idx) = (src[c + 1], c + 1);
            }
            *v = best;
            *at = idx as u32;
        }
    }
    for i in 0..oh {
        let first = (2 * i).saturating_sub(1);
        let last = (2 * i + 1).min(h - 1);
        for j in 0..ow {
            let (mut best, mut at) = (
                rows.value[first * ow + j],
                first * w + rows.col[first * ow + j] as usize,
            );
            for r in first + 1..=last {
                let v = rows.value[r * ow + j];
                if v > best {
                    (best, at) = (v, r * w + rows.col[r * ow + j] as usize);
                }
            }
            d[at] += gp[i * ow + j];
        }
    }
}

/// 3×3, stride 2, padding 1 (padding never wins) max pool on NCHW f32.
struct MaxPool3x3S2P1;

impl CustomOp1 for MaxPool3x3S2P1 {
    fn name(&self) -> &'static str {
        "max-pool-3x3-s2-p1"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let x = f32_slice(s, l, "input")?;
        let (oh, ow) = (out_len(h), out_len(w));
        let mut y = vec![0f32; n * c * oh * ow];
        y.par_chunks_mut(oh * ow)
            .zip(x.par_chunks(h * w))
            .for_each_init(Vec::new, |rows, (o, p)| max_pool_plane(p, h, w, rows, o));
        Ok((CpuStorage::F32(y), Shape::from((n, c, oh, ow))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.contiguous()?.apply_op2_no_bwd(
            &grad.contiguous()?,
            &MaxPool3x3S2P1Grad,
        )?))
    }
}

/// dL/dx of [`MaxPool3x3S2P1`]: each output's gradient goes to its window's first maximum.
struct MaxPool3x3S2P1Grad;

impl CustomOp2 for MaxPool3x3S2P1Grad {
    fn name(&self) -> &'static str {
        "max-pool-3x3-s2-p1-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        let x = f32_slice(s1, l1, "input")?;
        let g = f32_slice(s2, l2, "gradient")?;
        let (oh, ow) = (out_len(h), out_len(w));
        if l2.shape().dims() != [n, c, oh, ow] {
            candle_core::bail!(
                "max pool gradient {:?} for an input {:?}",
                l2.dims(),
                l1.dims()
            );
        }
        let mut gx = vec![0f32; n * c * h * w];
        gx.par_chunks_mut(h * w)
            .zip(x.par_chunks(h * w).zip(g.par_chunks(oh * ow)))
            .for_each_init(RowMaxima::default, |rows, (d, (p, gp))| {
                max_pool_grad_plane(p, (h, w), gp, d, rows)
            });
        Ok((CpuStorage::F32(gx), Shape::from((n, c, h, w))))
    }
}

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
pub fn max_pool_3x3_s2_p1(k: Kernels, x: &Tensor) -> Result<Tensor> {
    if k.native_for(x) {
        return x.contiguous()?.apply_op1(MaxPool3x3S2P1);
    }
    composed_max_pool_3x3_s2_p1(x)
}

/// The same pool from differentiable ops (GPU and other dtypes; zero padding is exact for
/// post-ReLU inputs).
fn composed_max_pool_3x3_s2_p1(x: &Tensor) -> Result<Tensor> {
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
            let y = max_pool_3x3_s2_p1(crate::Kernels::Native, &x).unwrap();
            let got: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(got, naive(&data, h, w), "{h}x{w}");
            // the composed fallback (GPU) computes the same
            let c = composed_max_pool_3x3_s2_p1(&x).unwrap();
            let got: Vec<f32> = c.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(got, naive(&data, h, w), "composed {h}x{w}");
        }
        // a NaN propagates to every window holding it, and only there
        let mut data = vec![1f32; 36];
        data[2 * 6 + 3] = f32::NAN;
        let x = Tensor::from_vec(data, (1, 1, 6, 6), &dev).unwrap();
        let got: Vec<f32> = max_pool_3x3_s2_p1(crate::Kernels::Native, &x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let nan_at: Vec<usize> = (0..9).filter(|&k| got[k].is_nan()).collect();
        // (2, 3) lies in output rows 1 (rows 1..=3) and columns 1, 2 (columns 1..=3, 3..=5)
        assert_eq!(nan_at, vec![4, 5], "{got:?}");
    }

    /// The separable backward sends every gradient where the row-major window scan does:
    /// ties (values from a set of 3, so most windows hold several maxima, ±0 among them), every
    /// parity of h and w, and planes with a NaN.
    #[test]
    fn grad_plane_equals_the_window_scan_with_ties() {
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize
        };
        for (h, w) in [(1, 1), (2, 3), (5, 4), (6, 7), (8, 8), (9, 11), (16, 8)] {
            for round in 0..20 {
                let vals = [0.0f32, -0.0, 1.0];
                let mut p: Vec<f32> = (0..h * w).map(|_| vals[next() % 3]).collect();
                if round % 5 == 4 {
                    let at = next() % (h * w);
                    p[at] = f32::NAN;
                }
                let (oh, ow) = (out_len(h), out_len(w));
                let gp: Vec<f32> = (0..oh * ow).map(|k| 1.0 + k as f32).collect();
                let mut want = vec![0f32; h * w];
                scan_grad_plane(&p, (h, w), &gp, &mut want);
                let mut got = vec![0f32; h * w];
                max_pool_grad_plane(&p, (h, w), &gp, &mut got, &mut RowMaxima::default());
                assert_eq!(got, want, "{h}x{w} round {round}: {p:?}");
            }
        }
    }

    #[test]
    fn gradient_goes_to_the_window_max() {
        let dev = Device::Cpu;
        // distinct values: each output's gradient lands on exactly one input
        let data: Vec<f32> = (0..36).map(|i| ((i * 17) % 36) as f32).collect();
        let x = Var::from_vec(data.clone(), (1, 1, 6, 6), &dev).unwrap();
        let y = max_pool_3x3_s2_p1(crate::Kernels::Native, x.as_tensor()).unwrap();
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
        // batch and channels: planes are independent
        let x = Var::from_vec(
            (0..2 * 3 * 7 * 5)
                .map(|i| ((i * 37) % 101) as f32)
                .collect::<Vec<_>>(),
            (2, 3, 7, 5),
            &dev,
        )
        .unwrap();
        let y = max_pool_3x3_s2_p1(crate::Kernels::Native, x.as_tensor()).unwrap();
        assert_eq!(y.dims(), &[2, 3, 4, 3]);
        let g = (y.sqr().unwrap().sum_all().unwrap()).backward().unwrap();
        let gx = g.get(&x).unwrap();
        let yc = composed_max_pool_3x3_s2_p1(x.as_tensor()).unwrap();
        let gc = yc.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let d: f32 = (gx - gc.get(&x).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(
            d, 0.0,
            "distinct values: the same gradient as the composed pool"
        );
    }
}

/// The backward of the stem pool of a 256×128 batch of 32, the window scan against the separable
/// pass, alternating (a measurement, not a check):
/// `cargo test --release -p reid-model --lib pool_grad_speed -- --ignored --nocapture`.
#[cfg(test)]
#[test]
#[ignore]
fn pool_grad_speed() {
    let (planes, h, w) = (32 * 64, 128, 64);
    let (oh, ow) = (out_len(h), out_len(w));
    let x: Vec<f32> = (0..planes * h * w)
        .map(|i| (((i * 2654435761) % 1000) as f32 / 500.0 - 1.0).max(0.0))
        .collect();
    let g: Vec<f32> = (0..planes * oh * ow).map(|i| (i % 7) as f32).collect();
    let scan = |gx: &mut [f32]| {
        gx.fill(0.0);
        gx.par_chunks_mut(h * w)
            .zip(x.par_chunks(h * w).zip(g.par_chunks(oh * ow)))
            .for_each(|(d, (p, gp))| scan_grad_plane(p, (h, w), gp, d));
    };
    let separable = |gx: &mut [f32]| {
        gx.fill(0.0);
        gx.par_chunks_mut(h * w)
            .zip(x.par_chunks(h * w).zip(g.par_chunks(oh * ow)))
            .for_each_init(RowMaxima::default, |rows, (d, (p, gp))| {
                max_pool_grad_plane(p, (h, w), gp, d, rows)
            });
    };
    let (mut ga, mut gb) = (vec![0f32; planes * h * w], vec![0f32; planes * h * w]);
    scan(&mut ga);
    separable(&mut gb);
    assert_eq!(ga, gb);
    let (mut a, mut b) = (vec![], vec![]);
    for _ in 0..7 {
        let t = std::time::Instant::now();
        scan(&mut ga);
        a.push(t.elapsed().as_secs_f64() * 1e3);
        let t = std::time::Instant::now();
        separable(&mut gb);
        b.push(t.elapsed().as_secs_f64() * 1e3);
    }
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    std::hint::black_box((&ga, &gb));
    println!(
        "window scan {:.1} ms, separable {:.1} ms (medians of 7)",
        a[3], b[3]
    );
}
