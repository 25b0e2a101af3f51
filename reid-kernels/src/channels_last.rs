//! Channels-last (NHWC) inference for BN-folded nets on the CPU.
//!
//! With the channels of a pixel side by side, a conv is one gemm over all the batch's pixels:
//! `Y[P × Cout] = cols(X)[P × k·k·Cin] × W[k·k·Cin × Cout]`, where P = N·Ho·Wo and the im2col of a
//! pixel is k contiguous copies of k·Cin floats (a 1×1 stride-1 conv needs no copy at all).
//! Unlike NCHW, narrow layers need no grouping of images into wide gemms and no
//! interleave/deinterleave, and the work splits over threads by blocks of pixels.
//! Measured against the NCHW path in `bench --layouts` (see BENCHMARKS.md).

use candle_core::{DType, Device, Result, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use std::mem::MaybeUninit;

use super::conv_gemm::{matmul_uninit, threads, Geom, Mat, PARTS};

/// A batch of activations, N×H×W×C in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct ActNhwc {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub data: Vec<f32>,
}

impl ActNhwc {
    /// From an N×C×H×W tensor (any dtype, any device; copied to the CPU as f32).
    pub fn from_nchw(x: &Tensor) -> Result<Self> {
        let (n, c, h, w) = x.dims4()?;
        let nchw = x
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        // transpose image by image on all threads (candle's strided copy is single-threaded)
        let (hw, img) = (h * w, c * h * w);
        let mut data = vec![0f32; nchw.len()];
        data.par_chunks_mut(img.max(1))
            .zip(nchw.par_chunks(img.max(1)))
            .for_each(|(dst, src)| {
                for (ch, plane) in src.chunks(hw.max(1)).enumerate() {
                    for (p, &v) in plane.iter().enumerate() {
                        dst[p * c + ch] = v;
                    }
                }
            });
        Ok(Self { n, h, w, c, data })
    }

    /// Back to an N×C×H×W tensor on `device`.
    pub fn to_nchw(&self, device: &Device) -> Result<Tensor> {
        Tensor::from_slice(&self.data, (self.n, self.h, self.w, self.c), &Device::Cpu)?
            .permute((0, 3, 1, 2))?
            .contiguous()?
            .to_device(device)
    }

    /// Mean over H×W: N×C.
    pub fn global_avg_pool(&self) -> Vec<f32> {
        let hw = self.h * self.w;
        let mut out = vec![0f32; self.n * self.c];
        out.par_chunks_mut(self.c.max(1))
            .zip(self.data.par_chunks((hw * self.c).max(1)))
            .for_each(|(o, img)| {
                for px in img.chunks(self.c) {
                    for (a, v) in o.iter_mut().zip(px) {
                        *a += *v;
                    }
                }
                let inv = 1.0 / hw.max(1) as f32;
                o.iter_mut().for_each(|a| *a *= inv);
            });
        out
    }

    /// 3×3 max pool, stride 2, padding 1 (the ResNet stem's), as in PyTorch.
    pub fn max_pool_3x3_s2_p1(&self) -> Self {
        let (ho, wo, c) = (self.h.div_ceil(2), self.w.div_ceil(2), self.c);
        let mut out = vec![0f32; self.n * ho * wo * c];
        out.par_chunks_mut((wo * c).max(1))
            .enumerate()
            .for_each(|(row, o)| {
                let (img, oy) = (row / ho, row % ho);
                let ys = (oy * 2).saturating_sub(1)..(oy * 2 + 2).min(self.h);
                for ox in 0..wo {
                    let dst = &mut o[ox * c..(ox + 1) * c];
                    dst.fill(f32::NEG_INFINITY);
                    for iy in ys.clone() {
                        for ix in (ox * 2).saturating_sub(1)..(ox * 2 + 2).min(self.w) {
                            let at = ((img * self.h + iy) * self.w + ix) * c;
                            for (d, v) in dst.iter_mut().zip(&self.data[at..at + c]) {
                                *d = d.max(*v);
                            }
                        }
                    }
                }
            });
        Self {
            n: self.n,
            h: ho,
            w: wo,
            c,
            data: out,
        }
    }
}

/// A conv with its (folded) bias, weights laid out for channels-last gemm.
#[derive(Clone, Debug)]
pub struct ConvNhwc {
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    /// [k·k·Cin × Cout], row (ky·k + kx)·Cin + c.
    wmat: Vec<f32>,
    bias: Vec<f32>,
}

impl ConvNhwc {
    /// From a Cout×Cin×k×k weight and a Cout bias (any device; kept on the CPU as f32).
    pub fn new(weight: &Tensor, bias: &Tensor, stride: usize, pad: usize) -> Result<Self> {
        let (cout, cin, kh, kw) = weight.dims4()?;
        if kh != kw || kh == 0 {
            candle_core::bail!("channels-last conv: kernel {kh}x{kw} is not square and non-empty");
        }
        if cout == 0 || cin == 0 {
            candle_core::bail!("channels-last conv: weight {cout}x{cin}x{kh}x{kw} has no channels");
        }
        if bias.dims() != [cout] {
            candle_core::bail!(
                "channels-last conv: bias shape {:?} does not fit {cout} filters",
                bias.dims()
            );
        }
        let cpu = |t: &Tensor| t.to_device(&Device::Cpu)?.to_dtype(DType::F32);
        // (o, c, ky, kx) -> (ky, kx, c, o)
        let wmat = cpu(weight)?
            .permute((2, 3, 1, 0))?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Self {
            cin,
            cout,
            k: kh,
            stride,
            pad,
            wmat,
            bias: cpu(bias)?.to_vec1::<f32>()?,
        })
    }

    pub fn out_channels(&self) -> usize {
        self.cout
    }

    /// relu?(conv(x) + bias (+ residual)).
    pub fn forward(&self, x: &ActNhwc, residual: Option<&ActNhwc>, relu: bool) -> Result<ActNhwc> {
        let g = Geom::new(
            (x.n, x.c, x.h, x.w),
            (self.cout, self.cin, self.k, self.k),
            self.stride,
            self.pad,
        )?;
        let (pixels, kdim, cout) = (g.n * g.hw_out(), g.ckk(), self.cout);
        if let Some(r) = residual {
            if (r.n, r.h, r.w, r.c) != (g.n, g.ho, g.wo, cout) {
                candle_core::bail!(
                    "channels-last conv: residual {}x{}x{}x{} does not fit output {}x{}x{}x{}",
                    r.n,
                    r.h,
                    r.w,
                    r.c,
                    g.n,
                    g.ho,
                    g.wo,
                    cout
                );
            }
        }
        // Not zeroed first: gemm writes every element (see `matmul_uninit`); a zeroing pass cost
        // about 5 % of a small net's forward.
        let total = pixels * cout;
        let mut y: Vec<f32> = Vec::with_capacity(total);
        let rows = chunk_rows(pixels);
        let work =
            |chunk: usize, yc: &mut [MaybeUninit<f32>], col: &mut Vec<f32>, par: Parallelism| {
                let p0 = chunk * rows;
                let r = yc.len() / cout;
                let lhs: &[f32] = if g.is_pointwise() {
                    &x.data[p0 * kdim..(p0 + r) * kdim]
                } else {
                    col.resize(r * kdim, 0.0);
                    im2col_rows(&x.data, &g, p0, col);
                    col
                };
                let yc = matmul_uninit(
                    yc,
                    (r, cout, kdim),
                    Mat::rows(lhs, kdim),
                    Mat::rows(&self.wmat, cout),
                    par,
                );
                // gemm overwrites the block; bias, residual and ReLU follow in one pass over it
                // while it is still in cache
                let res = residual.map(|res| &res.data[p0 * cout..(p0 + r) * cout]);
                epilogue(yc, &self.bias, res, relu);
            };
        let t = threads();
        let out = &mut y.spare_capacity_mut()[..total];
        if t > 1 && pixels.div_ceil(rows) >= t {
            out.par_chunks_mut(rows * cout)
                .enumerate()
                .for_each_init(Vec::new, |col, (i, yc)| work(i, yc, col, Parallelism::None));
        } else {
            let par = if t > 1 {
                Parallelism::Rayon(t)
            } else {
                Parallelism::None
            };
            let mut col = Vec::new();
            for (i, yc) in out.chunks_mut(rows * cout).enumerate() {
                work(i, yc, &mut col, par);
            }
        }
        // SAFETY: the chunks cover all `total` elements and `matmul_uninit` initialised each.
        unsafe { y.set_len(total) };
        Ok(ActNhwc {
            n: g.n,
            h: g.ho,
            w: g.wo,
            c: cout,
            data: y,
        })
    }
}

/// y = relu?(y + bias (+ residual)), rows of `bias.len()` channels.
fn epilogue(y: &mut [f32], bias: &[f32], residual: Option<&[f32]>, relu: bool) {
    let c = bias.len();
    let act = |s: f32| if relu { crate::relu_f32(s) } else { s };
    match residual {
        Some(r) => {
            for (row, rrow) in y.chunks_mut(c).zip(r.chunks(c)) {
                for ((d, &bv), &rv) in row.iter_mut().zip(bias).zip(rrow) {
                    *d = act(*d + bv + rv);
                }
            }
        }
        None => {
            for row in y.chunks_mut(c) {
                for (d, &bv) in row.iter_mut().zip(bias) {
                    *d = act(*d + bv);
                }
            }
        }
    }
}

/// Pixels per gemm: blocks small enough to stay in cache and to balance the threads, large
/// enough to keep gemm efficient; tiny maps (batch 1, last stage) go to gemm's own threads.
fn chunk_rows(pixels: usize) -> usize {
    const TARGET: usize = 512;
    const MIN: usize = 64;
    // PARTS, not the threads: gemm's depth blocking follows its shape, so rows a chunk decide
    // the sums' order
    let t = PARTS;
    if pixels < t * MIN {
        return pixels.max(1);
    }
    let rounds = pixels.div_ceil(t * TARGET);
    pixels.div_ceil(t * rounds)
}

/// col[r][(ky·k + kx)·Cin + c] = x[pixel p0 + r shifted by (ky, kx)] (0 outside the image),
/// for as many rows as `col` holds.
fn im2col_rows(x: &[f32], g: &Geom, p0: usize, col: &mut [f32]) {
    let (k, cin) = (g.k, g.cin);
    let seg = k * cin;
    for (r, dst) in col.chunks_mut(k * seg).enumerate() {
        let p = p0 + r;
        let (ox, oy, img) = (p % g.wo, (p / g.wo) % g.ho, p / g.hw_out());
        let ix0 = (ox * g.stride) as isize - g.pad as isize;
        let kx_lo = (-ix0).clamp(0, k as isize) as usize;
        let kx_hi = (g.w as isize - ix0).clamp(kx_lo as isize, k as isize) as usize;
        for ky in 0..k {
            let d = &mut dst[ky * seg..(ky + 1) * seg];
            let iy = (oy * g.stride + ky) as isize - g.pad as isize;
            if iy < 0 || iy >= g.h as isize || kx_lo == kx_hi {
                d.fill(0.0);
                continue;
            }
            d[..kx_lo * cin].fill(0.0);
            d[kx_hi * cin..].fill(0.0);
            let at = ((img * g.h + iy as usize) * g.w) as isize + ix0 + kx_lo as isize;
            let at = at as usize * cin;
            d[kx_lo * cin..kx_hi * cin].copy_from_slice(&x[at..at + (kx_hi - kx_lo) * cin]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::max_abs_diff;
    use reid_run::rng::SplitMix64;

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        let mut r = SplitMix64::new(seed);
        let n = shape.iter().product::<usize>();
        let v: Vec<f32> = (0..n).map(|_| r.normal() as f32).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Every kernel size, stride, parity and batch the ResNets use (and a few they do not),
    /// against candle's own conv2d + bias (+ residual) + ReLU in NCHW.
    #[test]
    fn conv_matches_candle_nchw() {
        let mut seed = 1;
        for &(k, pad) in &[(1, 0), (3, 1), (7, 3), (3, 0)] {
            for stride in [1, 2] {
                for &(h, w) in &[(9, 6), (8, 8), (5, 7)] {
                    for n in [1, 3] {
                        for residual in [false, true] {
                            seed += 1;
                            let (cin, cout) = (5, 7);
                            let x = randn(&[n, cin, h, w], seed);
                            let wt = randn(&[cout, cin, k, k], seed + 100);
                            let b = randn(&[cout], seed + 200);
                            let mut want = x
                                .conv2d(&wt, pad, stride, 1, 1)
                                .unwrap()
                                .broadcast_add(&b.reshape((1, cout, 1, 1)).unwrap())
                                .unwrap();
                            let res = if residual {
                                let r = randn(want.dims(), seed + 300);
                                want = (want + &r).unwrap();
                                Some(ActNhwc::from_nchw(&r).unwrap())
                            } else {
                                None
                            };
                            let want = want.relu().unwrap();
                            let conv = ConvNhwc::new(&wt, &b, stride, pad).unwrap();
                            let got = conv
                                .forward(&ActNhwc::from_nchw(&x).unwrap(), res.as_ref(), true)
                                .unwrap()
                                .to_nchw(&Device::Cpu)
                                .unwrap();
                            assert_eq!(got.dims(), want.dims());
                            let d = max_abs_diff(&got, &want);
                            assert!(
                                d < 1e-4,
                                "k{k} s{stride} p{pad} {h}x{w} n{n} res {residual}: {d}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn large_maps_split_over_chunks_and_threads() {
        // enough pixels for several chunks per thread
        let x = randn(&[2, 4, 40, 33], 7);
        let wt = randn(&[6, 4, 3, 3], 8);
        let b = randn(&[6], 9);
        let want = x
            .conv2d(&wt, 1, 1, 1, 1)
            .unwrap()
            .broadcast_add(&b.reshape((1, 6, 1, 1)).unwrap())
            .unwrap();
        let got = ConvNhwc::new(&wt, &b, 1, 1)
            .unwrap()
            .forward(&ActNhwc::from_nchw(&x).unwrap(), None, false)
            .unwrap()
            .to_nchw(&Device::Cpu)
            .unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-4);
    }

    #[test]
    fn pools_match_the_nchw_ops() {
        for &(h, w) in &[(9, 6), (8, 8), (5, 7), (1, 1)] {
            let x = randn(&[2, 3, h, w], (h * w) as u64);
            let a = ActNhwc::from_nchw(&x).unwrap();
            let got = a.max_pool_3x3_s2_p1().to_nchw(&Device::Cpu).unwrap();
            let want = crate::max_pool_3x3_s2_p1(crate::Kernels::Native, &x).unwrap();
            assert_eq!(got.dims(), want.dims());
            assert!(max_abs_diff(&got, &want) < 1e-6, "{h}x{w}");
            let got = Tensor::from_vec(a.global_avg_pool(), (2, 3), &Device::Cpu).unwrap();
            let want = crate::global_avg_pool(&x).unwrap();
            assert!(max_abs_diff(&got, &want) < 1e-5, "{h}x{w}");
        }
    }

    #[test]
    fn shape_errors_are_reported() {
        let wt = randn(&[6, 4, 3, 3], 1);
        let b = randn(&[5], 2);
        assert!(ConvNhwc::new(&wt, &b, 1, 1).is_err());
        let empty = Tensor::zeros((0, 4, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let no_bias = Tensor::zeros(0, DType::F32, &Device::Cpu).unwrap();
        assert!(ConvNhwc::new(&empty, &no_bias, 1, 1).is_err(), "no filters");
        let conv = ConvNhwc::new(&wt, &randn(&[6], 3), 1, 1).unwrap();
        let x = ActNhwc::from_nchw(&randn(&[1, 3, 5, 5], 4)).unwrap();
        assert!(conv.forward(&x, None, true).is_err(), "wrong channel count");
        let x = ActNhwc::from_nchw(&randn(&[1, 4, 5, 5], 4)).unwrap();
        let bad = ActNhwc::from_nchw(&randn(&[1, 6, 4, 5], 5)).unwrap();
        assert!(
            conv.forward(&x, Some(&bad), true).is_err(),
            "residual shape"
        );
    }
}
