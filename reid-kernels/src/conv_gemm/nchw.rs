//! NCHW convolution on f32 slices: forward (with a fused epilogue), input and weight
//! gradients, work split over images or inside gemm.

use std::mem::MaybeUninit;

use crate::filled_par;
use rayon::prelude::*;

use super::*;

/// Scratch buffers reused across the groups a thread processes.
#[derive(Default)]
pub(crate) struct Scratch {
    col: Vec<f32>,
    tmp: Vec<f32>,
}

/// The im2col matrix [ckk × G·hw] of a group of images (`x` holds the group's images).
/// Pointwise convs of a single image need no copy at all.
pub(crate) fn group_cols<'a>(
    x: &'a [f32],
    g: &Geom,
    col: &'a mut Vec<f32>,
    parallel: bool,
) -> &'a [f32] {
    let imgs = x.len() / (g.cin * g.h * g.w);
    if g.is_pointwise() && imgs == 1 {
        return x;
    }
    // SAFETY: the im2col of the group writes all ckk × imgs·hw elements.
    unsafe {
        refill(col, g.ckk() * imgs * g.hw_out(), |c| {
            fill_group_cols(x, g, c, parallel)
        })
    }
}

/// Write the im2col matrix [ckk × G·hw] of the group of images in `x` into `col`.
pub(crate) fn fill_group_cols(x: &[f32], g: &Geom, col: &mut [MaybeUninit<f32>], parallel: bool) {
    let (hw, img) = (g.hw_out(), g.cin * g.h * g.w);
    let ld = (x.len() / img) * hw;
    if g.is_pointwise() {
        interleave(x, g.cin, hw, col);
    } else {
        for (j, xi) in x.chunks(img).enumerate() {
            im2col(xi, g, &mut col[j * hw..], ld, parallel);
        }
    }
}

/// Run `f(group of x, group of y, scratch)` over image groups, in parallel over groups when
/// there are enough of them (`f` gets `true` then, to keep its inner work sequential).
pub(crate) fn for_groups<T: Send, F>(
    g: &Geom,
    x: &[f32],
    x_img: usize,
    y: &mut [T],
    y_img: usize,
    f: F,
) where
    F: Fn(&[f32], &mut [T], &mut Scratch, bool) + Sync,
{
    let gs = group_size(g);
    if outer_parallel(g) {
        y.par_chunks_mut(gs * y_img)
            .zip(x.par_chunks(gs * x_img))
            .for_each_init(Scratch::default, |s, (yg, xg)| f(xg, yg, s, true));
    } else {
        let mut s = Scratch::default();
        for (yg, xg) in y.chunks_mut(gs * y_img).zip(x.chunks(gs * x_img)) {
            f(xg, yg, &mut s, false);
        }
    }
}

/// What follows the gemm in the forward: a per-channel bias, a residual added (the shortcut of
/// a block's last conv) and/or ReLU (inference only).
#[derive(Clone, Copy, Default)]
pub(crate) struct Epilogue<'a> {
    pub(crate) bias: Option<&'a [f32]>,
    /// Same shape as the output (NCHW).
    pub(crate) residual: Option<&'a [f32]>,
    pub(crate) relu: bool,
}

impl Epilogue<'_> {
    /// The residual and ReLU (the bias is in `dst` already); `offset`: where `dst` starts in the
    /// whole output (to find its part of the residual).
    pub(super) fn finish(&self, dst: &mut [f32], offset: usize) {
        match (self.residual, self.relu) {
            (Some(r), relu) => {
                let r = &r[offset..offset + dst.len()];
                for (d, &v) in dst.iter_mut().zip(r) {
                    let s = *d + v;
                    *d = if relu { crate::relu_f32(s) } else { s };
                }
            }
            (None, true) => dst.iter_mut().for_each(|v| *v = crate::relu_f32(*v)),
            (None, false) => {}
        }
    }
}

pub(crate) fn conv_forward(x: &[f32], wt: &[f32], g: &Geom, epi: Epilogue) -> Vec<f32> {
    conv_forward_keep(x, wt, g, epi, false).0
}

/// The largest im2col a training forward keeps for the weight gradient (8 MiB of f32); a larger
/// one is built again in the backward. Kept whole, the im2cols of a 256×128 ResNet-50 step came
/// to 1.3 GB (its peak: 4.2 GB against PyTorch's 3.4) and their fresh pages cost more than the
/// second im2col pass saves (BENCHMARKS.md, session 10).
pub(crate) const KEEP_COLS_MAX_FLOATS: usize = 2 << 20;

/// The forward, and with `keep_cols` (non-pointwise convs whose im2col is at most
/// [`KEEP_COLS_MAX_FLOATS`]) the im2col of every image group, stored group after group (group j
/// at ckk·hw·(first image of j)), for the weight gradient.
pub(crate) fn conv_forward_keep(
    x: &[f32],
    wt: &[f32],
    g: &Geom,
    epi: Epilogue,
    keep_cols: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let (hw, ckk) = (g.hw_out(), g.ckk());
    let keep = keep_cols && !g.is_pointwise() && ckk * hw * g.n <= KEEP_COLS_MAX_FLOATS;
    if !keep && g.n >= PARTS && direct::serves(g) {
        return (direct::conv_forward(x, wt, g, epi), None);
    }
    conv_forward_gemm(x, wt, g, epi, keep)
}

/// [`conv_forward_keep`] through im2col and gemm (`keep`: keep the im2col).
pub(crate) fn conv_forward_gemm(
    x: &[f32],
    wt: &[f32],
    g: &Geom,
    epi: Epilogue,
    keep: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let (hw, ckk) = (g.hw_out(), g.ckk());
    // Not zeroed first: every group's block is written whole (bias rows, gemm or deinterleave).
    let total = g.n * g.cout * hw;
    let mut y: Vec<f32> = Vec::with_capacity(total);
    let img = g.cin * g.h * g.w;
    // written whole by the groups' im2col (no zeroing pass)
    let kept_total = if keep { ckk * hw * g.n } else { 0 };
    let mut kept: Vec<f32> = Vec::with_capacity(kept_total);
    let out = &mut y.spare_capacity_mut()[..total];
    let (y_base, x_base, kept_base) = (
        out.as_ptr() as usize,
        x.as_ptr() as usize,
        kept.as_mut_ptr() as usize,
    );
    let f32s = std::mem::size_of::<f32>();
    let kept_len = kept_total;
    for_groups(g, x, img, out, g.cout * hw, |xg, yg, s, outer| {
        let imgs = xg.len() / img;
        let ld = imgs * hw;
        let par = inner_parallelism(outer);
        let cols: &[f32] = if keep {
            let first = (xg.as_ptr() as usize - x_base) / f32s / img;
            let (at, len) = (ckk * hw * first, ckk * ld);
            assert!(at + len <= kept_len);
            // SAFETY: groups cover disjoint image ranges, so each writes its own region
            // [at, at + len) of `kept`'s capacity, which outlives this loop and is not otherwise
            // accessed; im2col writes the whole region before it is read.
            let region = unsafe {
                std::slice::from_raw_parts_mut((kept_base as *mut MaybeUninit<f32>).add(at), len)
            };
            fill_group_cols(xg, g, region, !outer);
            // SAFETY: just written whole.
            unsafe { assume_init(region) }
        } else {
            group_cols(xg, g, &mut s.col, !outer)
        };
        let offset = (yg.as_ptr() as usize - y_base) / f32s;
        let yg: &mut [f32] = if imgs == 1 {
            let dims = (g.cout, ld, ckk);
            let (lhs, rhs) = (Mat::rows(wt, ckk), Mat::rows(cols, ld));
            match epi.bias {
                Some(b) => {
                    let yg = fill_rows(yg, ld, b);
                    matmul(yg, dims, lhs, rhs, true, par);
                    yg
                }
                None => matmul_uninit(yg, dims, lhs, rhs, par),
            }
        } else {
            let dims = (g.cout, ld, ckk);
            let (lhs, rhs) = (Mat::rows(wt, ckk), Mat::rows(cols, ld));
            // SAFETY: the bias rows or gemm (which never reads an unaccumulated dst) write the
            // whole cout × ld block.
            let tmp = unsafe {
                refill(&mut s.tmp, g.cout * ld, |t| match epi.bias {
                    Some(b) => matmul(fill_rows(t, ld, b), dims, lhs, rhs, true, par),
                    None => {
                        matmul_uninit(t, dims, lhs, rhs, par);
                    }
                })
            };
            deinterleave(tmp, g.cout, hw, yg)
        };
        epi.finish(yg, offset);
    });
    // SAFETY: the groups cover all `total` elements of y (and of `kept`, when kept) and each
    // group's block was written whole.
    unsafe {
        y.set_len(total);
        kept.set_len(kept_total);
    }
    (y, keep.then_some(kept))
}

pub(crate) fn conv_input_grad(gy: &[f32], wt: &[f32], g: &Geom) -> Vec<f32> {
    if g.stride == 1 && !g.is_pointwise() && g.pad < g.k {
        return conv_input_grad_stride1(gy, wt, g);
    }
    let (hw, ckk) = (g.hw_out(), g.ckk());
    let img = g.cin * g.h * g.w;
    let mut gx = vec![0f32; g.n * img];
    for_groups(g, gy, g.cout * hw, &mut gx, img, |gyg, gxg, s, outer| {
        let imgs = gyg.len() / (g.cout * hw);
        let ld = imgs * hw;
        let par = inner_parallelism(outer);
        let lhs = Mat::transposed(wt, ckk); // Wᵀ: [ckk × cout]
        let rhs = if imgs == 1 {
            gyg
        } else {
            // SAFETY: interleave writes all cout × ld elements.
            unsafe { refill(&mut s.tmp, g.cout * ld, |t| interleave(gyg, g.cout, hw, t)) }
        };
        if g.is_pointwise() && imgs == 1 {
            matmul(gxg, (ckk, ld, g.cout), lhs, Mat::rows(rhs, ld), false, par);
            return;
        }
        // SAFETY: gemm without accumulation writes all ckk × ld elements.
        let col = unsafe {
            refill(&mut s.col, ckk * ld, |c| {
                matmul_uninit(c, (ckk, ld, g.cout), lhs, Mat::rows(rhs, ld), par);
            })
        };
        if g.is_pointwise() {
            deinterleave(col, g.cin, hw, as_uninit(gxg));
        } else {
            for (j, gxi) in gxg.chunks_mut(img).enumerate() {
                col2im_add(&col[j * hw..], g, ld, gxi, !outer);
            }
        }
    });
    gx
}

/// At stride 1 the input gradient is itself a convolution: gy convolved with the kernel flipped
/// in space and with in/out channels swapped, padding k − 1 − p. That runs through the forward
/// path (im2col writes, one gemm) instead of col2im's scattered read-modify-writes.
pub(crate) fn conv_input_grad_stride1(gy: &[f32], wt: &[f32], g: &Geom) -> Vec<f32> {
    let (k, kk) = (g.k, g.k * g.k);
    // Written whole below, so not zeroed first; one input channel a task (the flip and a
    // zeroing pass ran on one thread while the pool waited: ~3 % of a ResNet-18 step).
    let flipped = filled_par(wt.len(), g.cout * kk, |c, dst_c| {
        for (o, dst) in dst_c.chunks_exact_mut(kk).enumerate() {
            let src = &wt[(o * g.cin + c) * kk..(o * g.cin + c + 1) * kk];
            for (i, d) in dst.iter_mut().enumerate() {
                d.write(src[kk - 1 - i]); // (ky, kx) -> (k-1-ky, k-1-kx)
            }
        }
    });
    let gt = Geom {
        n: g.n,
        cin: g.cout,
        h: g.ho,
        w: g.wo,
        cout: g.cin,
        k,
        stride: 1,
        pad: k - 1 - g.pad,
        ho: g.h,
        wo: g.w,
    };
    debug_assert_eq!(
        (gt.h + 2 * gt.pad + 1 - k, gt.w + 2 * gt.pad + 1 - k),
        (g.h, g.w)
    );
    conv_forward(gy, &flipped, &gt, Epilogue::default())
}

/// dL/dW of a conv; `cols`: the forward's im2col of all images (see [`conv_forward_keep`]),
/// when kept. The direct kernel where it serves (no im2col), else gemm.
pub(crate) fn conv_weight_grad(x: &[f32], gy: &[f32], g: &Geom, cols: Option<&[f32]>) -> Vec<f32> {
    if cols.is_none() && g.n >= PARTS && direct::serves_weight_grad(g) {
        return direct::weight_grad(x, gy, g);
    }
    conv_weight_grad_gemm(x, gy, g, cols)
}

/// [`conv_weight_grad`] through im2col and gemm.
///
/// Mostly summed as gWᵀ [ckk × cout] = Σ cols × gyᵀ and transposed once at the end: gemm makes its
/// destination column-major, so for gWᵀ it packs gy [cout × G·hw] into panels and reads the
/// im2col rows in place. For gW itself it packed the im2col, k·k times bigger than gy at a k×k
/// conv: half the weight gradient's gemm time went to that packing (BENCHMARKS.md, session 12).
pub(crate) fn conv_weight_grad_gemm(
    x: &[f32],
    gy: &[f32],
    g: &Geom,
    cols: Option<&[f32]>,
) -> Vec<f32> {
    conv_weight_grad_oriented(x, gy, g, cols, weight_grad_as_is(g))
}

/// Whether the gemm weight gradient sums gW [cout × ckk] = Σ gy × colsᵀ itself rather than
/// gWᵀ and a transpose. gemm then packs the im2col (ckk × N·hw) instead of gy (cout × N·hw),
/// but no ckk × cout result is transposed: cheaper where the batch has few output pixels for
/// its channels (late layers of small inputs). Timed against each other in one process: 0.61–
/// 0.89× the time at N·hw ≤ 4·cout (ResNet-18 128×64's layer3/layer4), 0.98–1.24× above it.
pub(crate) fn weight_grad_as_is(g: &Geom) -> bool {
    g.n * g.hw_out() <= 4 * g.cout
}

/// [`conv_weight_grad_gemm`] in the orientation `as_is` picks (see [`weight_grad_as_is`]).
pub(crate) fn conv_weight_grad_oriented(
    x: &[f32],
    gy: &[f32],
    g: &Geom,
    cols: Option<&[f32]>,
    as_is: bool,
) -> Vec<f32> {
    let (hw, ckk) = (g.hw_out(), g.ckk());
    let img = g.cin * g.h * g.w;
    if g.n == 0 {
        return vec![0.0; ckk * g.cout];
    }
    let gs = group_size(g);
    // Σ over groups of cols_group [ckk × G·hw] × gy_groupᵀ [G·hw × cout], the first group's
    // product written (not added) into fresh memory; `kept`: the im2col of these images, when
    // the forward kept it.
    let sum_groups =
        |xs: &[f32], gys: &[f32], kept: Option<&[f32]>, par: Parallelism| -> Vec<f32> {
            let mut s = Scratch::default();
            let mut acc: Vec<f32> = Vec::with_capacity(ckk * g.cout);
            for (j, (xg, gyg)) in xs
                .chunks(gs * img)
                .zip(gys.chunks(gs * g.cout * hw))
                .enumerate()
            {
                let ld = (xg.len() / img) * hw;
                let gy_rows = if ld == hw {
                    gyg
                } else {
                    // SAFETY: interleave writes all cout × ld elements.
                    unsafe { refill(&mut s.tmp, g.cout * ld, |t| interleave(gyg, g.cout, hw, t)) }
                };
                let cols = match kept {
                    Some(k) => &k[ckk * hw * j * gs..ckk * hw * j * gs + ckk * ld],
                    None => group_cols(xg, g, &mut s.col, matches!(par, Parallelism::Rayon(_))),
                };
                let (dims, lhs, rhs) = if as_is {
                    (
                        (g.cout, ckk, ld),
                        Mat::rows(gy_rows, ld),
                        Mat::transposed(cols, ld),
                    )
                } else {
                    (
                        (ckk, g.cout, ld),
                        Mat::rows(cols, ld),
                        Mat::transposed(gy_rows, ld),
                    )
                };
                if j == 0 {
                    // SAFETY: gemm without accumulation writes all ckk × cout elements.
                    unsafe {
                        refill(&mut acc, ckk * g.cout, |a| {
                            matmul_uninit(a, dims, lhs, rhs, par);
                        })
                    };
                } else {
                    matmul(&mut acc, dims, lhs, rhs, true, par);
                }
            }
            // no images: the gradient is zero
            acc.resize(ckk * g.cout, 0.0);
            acc
        };
    // contiguous runs of groups, one partial sum each, as many as PARTS whatever the threads
    let groups = g.n.div_ceil(gs);
    let parts = groups.clamp(1, PARTS);
    let per = groups.div_ceil(parts) * gs;
    let par = part_parallelism(parts);
    let partials: Vec<Vec<f32>> = x
        .par_chunks((per * img).max(1))
        .zip(gy.par_chunks((per * g.cout * hw).max(1)))
        .enumerate()
        .map(|(t, (xs, gys))| {
            let n_here = xs.len() / img;
            let kept = cols.map(|c| &c[ckk * hw * t * per..ckk * hw * (t * per + n_here)]);
            sum_groups(xs, gys, kept, par)
        })
        .collect();
    if as_is {
        return sum_parts(partials);
    }
    sum_transposed(&partials, ckk, g.cout)
}

/// Σ of equally long `parts`, element by element in part order, in parallel over chunks.
pub(crate) fn sum_parts(mut parts: Vec<Vec<f32>>) -> Vec<f32> {
    if parts.len() <= 1 {
        return parts.pop().unwrap_or_default();
    }
    let (first, rest) = parts.split_at_mut(1);
    first[0]
        .par_chunks_mut(1 << 14)
        .enumerate()
        .for_each(|(i, dst)| {
            for p in rest.iter() {
                for (d, &v) in dst.iter_mut().zip(&p[i << 14..]) {
                    *d += v;
                }
            }
        });
    parts.swap_remove(0)
}

/// Σ of the row-major [rows × cols] matrices in `parts`, transposed ([cols × rows]), in parallel
/// over strips of output rows (done serially, the sum and transpose took ~4 % of the main
/// thread's time in a ResNet-18 step, with the second core idle).
pub(crate) fn sum_transposed(parts: &[Vec<f32>], rows: usize, cols: usize) -> Vec<f32> {
    // 16 output rows a strip: each source row gives one 64-byte run per part
    const STRIP: usize = 16;
    assert!(parts.iter().all(|p| p.len() == rows * cols));
    filled_par(rows * cols, STRIP * rows, |strip, out| {
        let c0 = strip * STRIP;
        let width = out.len() / rows.max(1);
        // a 16×16 block summed from contiguous source runs, then written as contiguous runs of
        // the output (element by element, the strided writes took a quarter of a 4×2 layer's
        // weight gradient)
        let mut tile = [[0f32; STRIP]; STRIP];
        for r0 in (0..rows).step_by(STRIP) {
            let height = STRIP.min(rows - r0);
            for (dr, t) in tile[..height].iter_mut().enumerate() {
                let at = (r0 + dr) * cols + c0;
                // whole strips as fixed-size arrays: a copy of run-time length was a memmove
                // call per 16 floats
                if width == STRIP && !parts.is_empty() {
                    let run = |p: &[f32]| -> [f32; STRIP] { std::array::from_fn(|j| p[at + j]) };
                    *t = run(&parts[0]);
                    for p in &parts[1..] {
                        for (a, b) in t.iter_mut().zip(run(p)) {
                            *a += b;
                        }
                    }
                } else {
                    for (j, a) in t[..width].iter_mut().enumerate() {
                        let sum = parts.iter().map(|p| p[at + j]).reduce(|a, b| a + b);
                        *a = sum.unwrap_or(0.0);
                    }
                }
            }
            for dc in 0..width {
                let dst = &mut out[dc * rows + r0..dc * rows + r0 + height];
                for (o, t) in dst.iter_mut().zip(&tile) {
                    o.write(t[dc]);
                }
            }
        }
    })
}
