//! CPU f32 convolution whose forward, input gradient and weight gradient all run through gemm.
//!
//! candle's stock CPU conv backward sends every input gradient through a direct
//! `conv_transpose2d` loop (~16 GFLOP/s against 100–200 for gemm) and fails when H and W have
//! different parity at a stride-2 conv. Here:
//! - forward:      y[n]  = W[Cout, Cin·k·k] × im2col(x[n])
//! - input grad:   gx[n] = col2im(Wᵀ × gy[n])          (any stride, padding, parity)
//! - weight grad:  gW    = Σₙ gy[n] × im2col(x[n])ᵀ
//!
//! 1×1 stride-1 convs skip im2col/col2im. Work is split over images when the batch has at
//! least as many images as threads, otherwise inside gemm.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::f32_slice;
use gemm::Parallelism;
use rayon::prelude::*;

/// Shape of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geom {
    pub(crate) n: usize,
    pub(crate) cin: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) cout: usize,
    pub(crate) k: usize,
    pub(crate) stride: usize,
    pub(crate) pad: usize,
    pub(crate) ho: usize,
    pub(crate) wo: usize,
}

impl Geom {
    pub(crate) fn new(
        (n, cin, h, w): (usize, usize, usize, usize),
        (cout, cin_w, kh, kw): (usize, usize, usize, usize),
        stride: usize,
        pad: usize,
    ) -> Result<Self> {
        if cin != cin_w || kh != kw {
            candle_core::bail!(
                "conv2d-gemm: input [{n}, {cin}, {h}, {w}] does not fit kernel [{cout}, {cin_w}, {kh}, {kw}]"
            );
        }
        if h + 2 * pad < kh || w + 2 * pad < kw || stride == 0 {
            candle_core::bail!(
                "conv2d-gemm: input {h}x{w} smaller than kernel {kh}x{kw} (padding {pad})"
            );
        }
        Ok(Self {
            n,
            cin,
            h,
            w,
            cout,
            k: kh,
            stride,
            pad,
            ho: (h + 2 * pad - kh) / stride + 1,
            wo: (w + 2 * pad - kw) / stride + 1,
        })
    }

    pub(crate) fn ckk(&self) -> usize {
        self.cin * self.k * self.k
    }

    pub(crate) fn hw_out(&self) -> usize {
        self.ho * self.wo
    }

    pub(crate) fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }

    /// Output columns `ox` whose input column `ox·s + kx − p` lies inside [0, w).
    pub(crate) fn valid_ox(&self, kx: usize) -> (usize, usize) {
        let (s, p) = (self.stride as isize, self.pad as isize);
        let lo = {
            let need = p - kx as isize; // ox·s ≥ p − kx
            if need <= 0 {
                0
            } else {
                ((need + s - 1) / s) as usize
            }
        };
        let hi_num = self.w as isize - 1 + p - kx as isize; // ox·s ≤ w − 1 + p − kx
        let hi = if hi_num < 0 {
            0
        } else {
            (hi_num / s + 1) as usize
        };
        (lo.min(self.wo), hi.min(self.wo).max(lo.min(self.wo)))
    }
}

/// candle's thread count, read once: `get_num_threads` parses /proc/cpuinfo on every call
/// (~100 times per forward pass; a measurable share of a small model's latency).
pub(crate) fn threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| candle_core::utils::get_num_threads().max(1))
}

/// gemm wants wide matrices: late ResNet layers have a handful of output pixels per image
/// (8×4 or less), so images are grouped until a gemm has at least this many columns.
const MIN_GEMM_COLUMNS: usize = 256;

/// Images per group.
fn group_size(g: &Geom) -> usize {
    MIN_GEMM_COLUMNS.div_ceil(g.hw_out()).clamp(1, g.n.max(1))
}

/// Split groups over threads when there are enough of them, else parallelise inside gemm.
fn outer_parallel(g: &Geom) -> bool {
    threads() > 1 && g.n.div_ceil(group_size(g)) >= threads()
}

fn inner_parallelism(outer: bool) -> Parallelism {
    if outer || threads() == 1 {
        Parallelism::None
    } else {
        Parallelism::Rayon(threads())
    }
}

/// col[(c·k + ky)·k + kx][oy·wo + ox] = x[c, oy·s + ky − p, ox·s + kx − p] (0 outside).
/// Row r of `col` starts at r·ld (ld ≥ ho·wo), so several images can share one column block.
fn im2col(x: &[f32], g: &Geom, col: &mut [MaybeUninit<f32>], ld: usize, parallel: bool) {
    let hw = g.hw_out();
    let fill = |r: usize, row: &mut [MaybeUninit<f32>]| {
        let row = &mut row[..hw];
        let c = r / (g.k * g.k);
        let ky = (r / g.k) % g.k;
        let kx = r % g.k;
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        if g.stride == 1 && g.ho == g.h && g.wo == g.w {
            same_size_shift(plane, g, ky, kx, row);
            return;
        }
        let (lo, hi) = g.valid_ox(kx);
        for oy in 0..g.ho {
            let out = &mut row[oy * g.wo..(oy + 1) * g.wo];
            let iy = (oy * g.stride + ky) as isize - g.pad as isize;
            if iy < 0 || iy >= g.h as isize || lo >= hi {
                fill_u(out, 0.0);
                continue;
            }
            fill_u(&mut out[..lo], 0.0);
            fill_u(&mut out[hi..], 0.0);
            let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
            let ix0 = lo * g.stride + kx - g.pad;
            if g.stride == 1 {
                copy_u(&mut out[lo..hi], &src[ix0..ix0 + (hi - lo)]);
            } else {
                for (j, o) in out[lo..hi].iter_mut().enumerate() {
                    o.write(src[ix0 + j * g.stride]);
                }
            }
        }
    };
    let rows = g.ckk();
    if parallel {
        col.par_chunks_mut(ld)
            .take(rows)
            .enumerate()
            .for_each(|(r, row)| fill(r, row));
    } else {
        col.chunks_mut(ld)
            .take(rows)
            .enumerate()
            .for_each(|(r, row)| fill(r, row));
    }
}

/// One im2col row of a stride-1 conv whose output has the input's size: out[i] = plane[i + d]
/// with d = (ky − p)·w + (kx − p), so one block copy, then zeros where the column wrapped
/// around a row edge or the row fell outside the image (instead of one short copy per row).
fn same_size_shift(plane: &[f32], g: &Geom, ky: usize, kx: usize, out: &mut [MaybeUninit<f32>]) {
    let (h, w) = (g.h as isize, g.w as isize);
    let (dy, dx) = (ky as isize - g.pad as isize, kx as isize - g.pad as isize);
    let hw = h * w;
    let d = dy * w + dx;
    let (lo, hi) = ((-d).clamp(0, hw), (hw - d).clamp(0, hw));
    fill_u(&mut out[..lo as usize], 0.0);
    fill_u(&mut out[hi as usize..], 0.0);
    if lo < hi {
        copy_u(
            &mut out[lo as usize..hi as usize],
            &plane[(lo + d) as usize..(hi + d) as usize],
        );
    }
    if dx != 0 {
        // columns whose source ox + dx lies outside [0, w)
        let n = dx.unsigned_abs().min(g.w);
        let first = if dx > 0 { g.w - n } else { 0 };
        for row in out[..g.h * g.w].chunks_mut(g.w) {
            fill_u(&mut row[first..first + n], 0.0);
        }
    }
}

/// gx[c, iy, ix] += col[r][oy·wo + ox]: the adjoint of [`im2col`] (same `ld`).
fn col2im_add(col: &[f32], g: &Geom, ld: usize, gx: &mut [f32], parallel: bool) {
    let kk = g.k * g.k;
    // One input channel per task: the k·k rows of a channel write only into its own plane.
    let per_channel = |c: usize, plane: &mut [f32]| {
        for r in c * kk..(c + 1) * kk {
            let ky = (r / g.k) % g.k;
            let kx = r % g.k;
            let (lo, hi) = g.valid_ox(kx);
            if lo >= hi {
                continue;
            }
            let row = &col[r * ld..r * ld + g.hw_out()];
            for oy in 0..g.ho {
                let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                if iy < 0 || iy >= g.h as isize {
                    continue;
                }
                let dst = &mut plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                let src = &row[oy * g.wo + lo..oy * g.wo + hi];
                let ix0 = lo * g.stride + kx - g.pad;
                if g.stride == 1 {
                    for (d, s) in dst[ix0..ix0 + (hi - lo)].iter_mut().zip(src) {
                        *d += *s;
                    }
                } else {
                    for (j, s) in src.iter().enumerate() {
                        dst[ix0 + j * g.stride] += *s;
                    }
                }
            }
        }
    };
    if parallel {
        gx.par_chunks_mut(g.h * g.w)
            .enumerate()
            .for_each(|(c, p)| per_channel(c, p));
    } else {
        gx.chunks_mut(g.h * g.w)
            .enumerate()
            .for_each(|(c, p)| per_channel(c, p));
    }
}

/// [G images][rows][hw] → [rows][G·hw] (image-major blocks side by side).
fn interleave(src: &[f32], rows: usize, hw: usize, dst: &mut [MaybeUninit<f32>]) {
    let imgs = src.len() / (rows * hw);
    let ld = imgs * hw;
    for j in 0..imgs {
        for r in 0..rows {
            copy_u(
                &mut dst[r * ld + j * hw..r * ld + (j + 1) * hw],
                &src[(j * rows + r) * hw..(j * rows + r + 1) * hw],
            );
        }
    }
}

/// Write `v` to every element.
fn fill_u(dst: &mut [MaybeUninit<f32>], v: f32) {
    dst.iter_mut().for_each(|d| {
        d.write(v);
    });
}

/// Write `src` into `dst` (same length).
fn copy_u(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
    assert_eq!(dst.len(), src.len());
    for (d, &v) in dst.iter_mut().zip(src) {
        d.write(v);
    }
}

/// Initialised f32s as a write-only target for the functions above (they only ever write
/// initialised values through it, so the slice stays initialised).
fn as_uninit(s: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: same layout; nothing writes an uninitialised value through the returned slice.
    unsafe { &mut *(s as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

/// Rows [len / v.len() × ld]: row r filled with v[r]; returns the block initialised.
fn fill_rows<'a>(dst: &'a mut [MaybeUninit<f32>], ld: usize, v: &[f32]) -> &'a mut [f32] {
    assert_eq!(dst.len(), v.len() * ld);
    for (row, &x) in dst.chunks_mut(ld.max(1)).zip(v) {
        row.iter_mut().for_each(|d| {
            d.write(x);
        });
    }
    // SAFETY: the rows cover dst whole (asserted) and each element was written above.
    unsafe { assume_init(dst) }
}

/// The inverse of [`interleave`], into memory that need not be initialised; returns it
/// initialised.
fn deinterleave<'a>(
    src: &[f32],
    rows: usize,
    hw: usize,
    dst: &'a mut [MaybeUninit<f32>],
) -> &'a mut [f32] {
    let imgs = dst.len() / (rows * hw);
    assert_eq!(dst.len(), imgs * rows * hw);
    let ld = imgs * hw;
    for j in 0..imgs {
        for r in 0..rows {
            let s = &src[r * ld + j * hw..r * ld + (j + 1) * hw];
            for (d, &x) in dst[(j * rows + r) * hw..(j * rows + r + 1) * hw]
                .iter_mut()
                .zip(s)
            {
                d.write(x);
            }
        }
    }
    // SAFETY: (j, r) runs over every hw-long block of dst (asserted length), each written above.
    unsafe { assume_init(dst) }
}

/// # Safety
/// Every element of `s` must have been written.
unsafe fn assume_init(s: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: MaybeUninit<f32> has f32's layout; the caller guarantees initialisation.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<f32>(), s.len()) }
}

/// A row-major view: pointer, row stride, column stride.
#[derive(Clone, Copy)]
pub(crate) struct Mat {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

impl Mat {
    pub(crate) fn rows(s: &[f32], cols: usize) -> Self {
        Self {
            ptr: s.as_ptr(),
            rs: cols as isize,
            cs: 1,
        }
    }

    /// The transpose of a row-major [rows × cols] matrix stored in `s`.
    fn transposed(s: &[f32], cols: usize) -> Self {
        Self {
            ptr: s.as_ptr(),
            rs: 1,
            cs: cols as isize,
        }
    }
}

/// dst[m × n] (row-major) = lhs[m × k] × rhs[k × n], or += when `accumulate`.
pub(crate) fn matmul(
    dst: &mut [f32],
    dims: (usize, usize, usize),
    lhs: Mat,
    rhs: Mat,
    accumulate: bool,
    par: Parallelism,
) {
    assert!(dst.len() >= dims.0 * dims.1);
    // SAFETY: dst holds m×n initialised elements.
    unsafe { gemm_into(dst.as_mut_ptr(), dims, lhs, rhs, accumulate, par) }
}

/// dst[m × n] (row-major) = lhs[m × k] × rhs[k × n] into memory that need not be initialised;
/// returns it initialised.
pub(crate) fn matmul_uninit(
    dst: &mut [MaybeUninit<f32>],
    (m, n, k): (usize, usize, usize),
    lhs: Mat,
    rhs: Mat,
    par: Parallelism,
) -> &mut [f32] {
    assert_eq!(dst.len(), m * n);
    let ptr = dst.as_mut_ptr().cast::<f32>();
    // SAFETY: dst holds m×n elements. With read_dst = false (and alpha 0) gemm never reads dst:
    // its first pass over k stores beta·lhs·rhs, later passes add to what it stored, and k = 0
    // stores zeros. So all m·n elements are initialised when it returns.
    unsafe {
        gemm_into(ptr, (m, n, k), lhs, rhs, false, par);
        std::slice::from_raw_parts_mut(ptr, m * n)
    }
}

/// The one gemm call behind [`matmul`] and [`matmul_uninit`].
///
/// # Safety
/// `dst` must be valid for m×n writes (and initialised when `accumulate`); the views must hold
/// m×k and k×n elements with their strides (the callers' geometry checks this).
unsafe fn gemm_into(
    dst: *mut f32,
    (m, n, k): (usize, usize, usize),
    lhs: Mat,
    rhs: Mat,
    accumulate: bool,
    par: Parallelism,
) {
    // SAFETY: the caller's contract above.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            n as isize,
            accumulate,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
            rhs.cs,
            rhs.rs,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// Scratch buffers reused across the groups a thread processes.
#[derive(Default)]
struct Scratch {
    col: Vec<f32>,
    tmp: Vec<f32>,
}

/// The im2col matrix [ckk × G·hw] of a group of images (`x` holds the group's images).
/// Pointwise convs of a single image need no copy at all.
fn group_cols<'a>(x: &'a [f32], g: &Geom, col: &'a mut Vec<f32>, parallel: bool) -> &'a [f32] {
    let imgs = x.len() / (g.cin * g.h * g.w);
    if g.is_pointwise() && imgs == 1 {
        return x;
    }
    col.resize(g.ckk() * imgs * g.hw_out(), 0.0);
    fill_group_cols(x, g, as_uninit(col), parallel);
    col
}

/// Write the im2col matrix [ckk × G·hw] of the group of images in `x` into `col`.
fn fill_group_cols(x: &[f32], g: &Geom, col: &mut [MaybeUninit<f32>], parallel: bool) {
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
fn for_groups<T: Send, F>(g: &Geom, x: &[f32], x_img: usize, y: &mut [T], y_img: usize, f: F)
where
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
struct Epilogue<'a> {
    bias: Option<&'a [f32]>,
    /// Same shape as the output (NCHW).
    residual: Option<&'a [f32]>,
    relu: bool,
}

impl Epilogue<'_> {
    /// Prefill rows [cout × ld] with the bias, so gemm accumulates on top of it.
    fn prefill(&self, dst: &mut [f32], ld: usize) -> bool {
        match self.bias {
            Some(b) => {
                fill_rows(as_uninit(dst), ld, b);
                true
            }
            None => false,
        }
    }

    /// `offset`: where `dst` starts in the whole output (to find its part of the residual).
    fn finish(&self, dst: &mut [f32], offset: usize) {
        match (self.residual, self.relu) {
            (Some(r), relu) => {
                let r = &r[offset..offset + dst.len()];
                for (d, &v) in dst.iter_mut().zip(r) {
                    let s = *d + v;
                    *d = if relu { s.max(0.0) } else { s };
                }
            }
            (None, true) => dst.iter_mut().for_each(|v| *v = v.max(0.0)),
            (None, false) => {}
        }
    }
}

fn conv_forward(x: &[f32], wt: &[f32], g: &Geom, epi: Epilogue) -> Vec<f32> {
    conv_forward_keep(x, wt, g, epi, false).0
}

/// The forward, and with `keep_cols` (non-pointwise convs) the im2col of every image group,
/// stored group after group (group j at ckk·hw·(first image of j)), for the weight gradient.
fn conv_forward_keep(
    x: &[f32],
    wt: &[f32],
    g: &Geom,
    epi: Epilogue,
    keep_cols: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let (hw, ckk) = (g.hw_out(), g.ckk());
    // Not zeroed first: every group's block is written whole (bias rows, gemm or deinterleave).
    let total = g.n * g.cout * hw;
    let mut y: Vec<f32> = Vec::with_capacity(total);
    let img = g.cin * g.h * g.w;
    let keep = keep_cols && !g.is_pointwise();
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
            s.tmp.resize(g.cout * ld, 0.0);
            let acc = epi.prefill(&mut s.tmp, ld);
            matmul(
                &mut s.tmp,
                (g.cout, ld, ckk),
                Mat::rows(wt, ckk),
                Mat::rows(cols, ld),
                acc,
                par,
            );
            deinterleave(&s.tmp, g.cout, hw, yg)
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

fn conv_input_grad(gy: &[f32], wt: &[f32], g: &Geom) -> Vec<f32> {
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
            s.tmp.resize(g.cout * ld, 0.0);
            interleave(gyg, g.cout, hw, as_uninit(&mut s.tmp));
            &s.tmp
        };
        if g.is_pointwise() && imgs == 1 {
            matmul(gxg, (ckk, ld, g.cout), lhs, Mat::rows(rhs, ld), false, par);
            return;
        }
        s.col.resize(ckk * ld, 0.0);
        matmul(
            &mut s.col,
            (ckk, ld, g.cout),
            lhs,
            Mat::rows(rhs, ld),
            false,
            par,
        );
        if g.is_pointwise() {
            deinterleave(&s.col, g.cin, hw, as_uninit(gxg));
        } else {
            for (j, gxi) in gxg.chunks_mut(img).enumerate() {
                col2im_add(&s.col[j * hw..], g, ld, gxi, !outer);
            }
        }
    });
    gx
}

/// At stride 1 the input gradient is itself a convolution: gy convolved with the kernel flipped
/// in space and with in/out channels swapped, padding k − 1 − p. That runs through the forward
/// path (im2col writes, one gemm) instead of col2im's scattered read-modify-writes.
fn conv_input_grad_stride1(gy: &[f32], wt: &[f32], g: &Geom) -> Vec<f32> {
    let (k, kk) = (g.k, g.k * g.k);
    let mut flipped = vec![0f32; wt.len()];
    for o in 0..g.cout {
        for c in 0..g.cin {
            let src = &wt[(o * g.cin + c) * kk..(o * g.cin + c + 1) * kk];
            let dst = &mut flipped[(c * g.cout + o) * kk..(c * g.cout + o + 1) * kk];
            for (i, d) in dst.iter_mut().enumerate() {
                *d = src[kk - 1 - i]; // (ky, kx) -> (k-1-ky, k-1-kx)
            }
        }
    }
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

/// `cols`: the forward's im2col of all images (see [`conv_forward_keep`]), when kept.
fn conv_weight_grad(x: &[f32], gy: &[f32], g: &Geom, cols: Option<&[f32]>) -> Vec<f32> {
    let (hw, ckk) = (g.hw_out(), g.ckk());
    let img = g.cin * g.h * g.w;
    let gs = group_size(g);
    // acc += Σ over groups of gy_group [cout × G·hw] × cols_groupᵀ [G·hw × ckk];
    // `kept`: the im2col of these images, when the forward kept it.
    let accumulate = |xs: &[f32], gys: &[f32], kept: Option<&[f32]>, acc: &mut [f32], outer| {
        let mut s = Scratch::default();
        let par = inner_parallelism(outer);
        for (j, (xg, gyg)) in xs
            .chunks(gs * img)
            .zip(gys.chunks(gs * g.cout * hw))
            .enumerate()
        {
            let ld = (xg.len() / img) * hw;
            let lhs = if ld == hw {
                gyg
            } else {
                s.tmp.resize(g.cout * ld, 0.0);
                interleave(gyg, g.cout, hw, as_uninit(&mut s.tmp));
                &s.tmp
            };
            let cols = match kept {
                Some(k) => &k[ckk * hw * j * gs..ckk * hw * j * gs + ckk * ld],
                None => group_cols(xg, g, &mut s.col, !outer),
            };
            matmul(
                acc,
                (g.cout, ckk, ld),
                Mat::rows(lhs, ld),
                Mat::transposed(cols, ld),
                j > 0,
                par,
            );
        }
    };
    let mut total = vec![0f32; g.cout * ckk];
    if outer_parallel(g) {
        // contiguous runs of groups per thread, one partial sum each
        let groups = g.n.div_ceil(gs);
        let per = groups.div_ceil(threads()) * gs;
        let partials: Vec<Vec<f32>> = x
            .par_chunks(per * img)
            .zip(gy.par_chunks(per * g.cout * hw))
            .enumerate()
            .map(|(t, (xs, gys))| {
                let mut acc = vec![0f32; g.cout * ckk];
                let n_here = xs.len() / img;
                let kept = cols.map(|c| &c[ckk * hw * t * per..ckk * hw * (t * per + n_here)]);
                accumulate(xs, gys, kept, &mut acc, true);
                acc
            })
            .collect();
        for p in partials {
            for (a, b) in total.iter_mut().zip(&p) {
                *a += *b;
            }
        }
    } else {
        accumulate(x, gy, cols, &mut total, false);
    }
    total
}

fn dims4(l: &Layout) -> Result<(usize, usize, usize, usize)> {
    l.shape().dims4()
}

/// The forward op `(x, w) → y`, with a gemm-based backward.
#[derive(Debug, Default)]
pub struct Conv2dGemm {
    pub stride: usize,
    pub padding: usize,
    /// When set, the forward keeps its im2col here and the weight gradient takes it instead of
    /// building it again (memory: k·k·Cin·Ho·Wo floats per image until the backward).
    saved_cols: Option<std::sync::Mutex<Option<Vec<f32>>>>,
}

impl Conv2dGemm {
    pub fn new(stride: usize, padding: usize) -> Self {
        Self {
            stride,
            padding,
            saved_cols: None,
        }
    }

    /// Keep the forward's im2col for the weight gradient.
    pub fn keeping_cols(mut self) -> Self {
        self.saved_cols = Some(std::sync::Mutex::new(None));
        self
    }
}

impl CustomOp2 for Conv2dGemm {
    fn name(&self) -> &'static str {
        "conv2d-gemm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(dims4(l1)?, dims4(l2)?, self.stride, self.padding)?;
        let x = f32_slice(s1, l1, "input")?;
        let w = f32_slice(s2, l2, "weight")?;
        let keep = self.saved_cols.is_some();
        let (y, cols) = conv_forward_keep(x, w, &g, Epilogue::default(), keep);
        if let (Some(slot), Some(cols)) = (&self.saved_cols, cols) {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(cols);
        }
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.cout, g.ho, g.wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        // No gradient for an input that is neither a variable nor computed from one (the image).
        let gx = if x.track_op() {
            let (_, _, h, wd) = x.dims4()?;
            Some(grad.apply_op2_no_bwd(
                w,
                &Conv2dInputGrad {
                    stride: self.stride,
                    padding: self.padding,
                    h,
                    w: wd,
                },
            )?)
        } else {
            None
        };
        let gw = if w.track_op() {
            // taken, not cloned: a second backward over the same graph builds it again
            let cols = self
                .saved_cols
                .as_ref()
                .and_then(|s| s.lock().unwrap_or_else(|e| e.into_inner()).take());
            Some(x.apply_op2_no_bwd(
                &grad,
                &Conv2dWeightGrad {
                    stride: self.stride,
                    padding: self.padding,
                    k: w.dim(2)?,
                    cols,
                },
            )?)
        } else {
            None
        };
        Ok((gx, gw))
    }
}

/// `(gy, w) → gx` for an input of spatial size h×w.
struct Conv2dInputGrad {
    stride: usize,
    padding: usize,
    h: usize,
    w: usize,
}

impl CustomOp2 for Conv2dInputGrad {
    fn name(&self) -> &'static str {
        "conv2d-gemm-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, cout, ho, wo) = dims4(l1)?;
        let wd = dims4(l2)?;
        let g = Geom::new((n, wd.1, self.h, self.w), wd, self.stride, self.padding)?;
        if (g.cout, g.ho, g.wo) != (cout, ho, wo) {
            candle_core::bail!(
                "conv2d-gemm input grad: gradient shape {:?} does not fit",
                l1.dims()
            );
        }
        let gy = f32_slice(s1, l1, "gradient")?;
        let w = f32_slice(s2, l2, "weight")?;
        let gx = conv_input_grad(gy, w, &g);
        Ok((CpuStorage::F32(gx), Shape::from((g.n, g.cin, g.h, g.w))))
    }
}

/// `(x, gy) → gW` for a k×k kernel.
struct Conv2dWeightGrad {
    stride: usize,
    padding: usize,
    k: usize,
    /// The forward's im2col of x, when it kept it.
    cols: Option<Vec<f32>>,
}

impl CustomOp2 for Conv2dWeightGrad {
    fn name(&self) -> &'static str {
        "conv2d-gemm-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let xd = dims4(l1)?;
        let (n, cout, ho, wo) = dims4(l2)?;
        let g = Geom::new(xd, (cout, xd.1, self.k, self.k), self.stride, self.padding)?;
        if (g.n, g.ho, g.wo) != (n, ho, wo) {
            candle_core::bail!(
                "conv2d-gemm weight grad: gradient shape {:?} does not fit",
                l2.dims()
            );
        }
        let x = f32_slice(s1, l1, "input")?;
        let gy = f32_slice(s2, l2, "gradient")?;
        let cols = self
            .cols
            .as_deref()
            .filter(|c| c.len() == g.ckk() * g.hw_out() * g.n);
        let gw = conv_weight_grad(x, gy, &g, cols);
        Ok((CpuStorage::F32(gw), Shape::from((g.cout, g.cin, g.k, g.k))))
    }
}

/// Inference conv with its BN folded in: conv + bias (+ ReLU) in one pass, no backward. As a
/// three-input op (x, w, shortcut) it is a block's last conv: relu(conv + bias + shortcut) in
/// one pass over the output (no separate add and ReLU tensors).
#[derive(Clone, Debug)]
pub struct Conv2dBiasInference {
    pub stride: usize,
    pub padding: usize,
    pub bias: Vec<f32>,
    pub relu: bool,
}

impl Conv2dBiasInference {
    fn forward(
        &self,
        (s1, l1): (&CpuStorage, &Layout),
        (s2, l2): (&CpuStorage, &Layout),
        residual: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(dims4(l1)?, dims4(l2)?, self.stride, self.padding)?;
        if self.bias.len() != g.cout {
            candle_core::bail!(
                "conv2d-gemm: bias of {} for {} channels",
                self.bias.len(),
                g.cout
            );
        }
        let residual = match residual {
            Some((s3, l3)) => {
                if dims4(l3)? != (g.n, g.cout, g.ho, g.wo) {
                    candle_core::bail!(
                        "conv2d-gemm: residual {:?} for an output of ({}, {}, {}, {})",
                        l3.dims(),
                        g.n,
                        g.cout,
                        g.ho,
                        g.wo
                    );
                }
                Some(f32_slice(s3, l3, "residual")?)
            }
            None => None,
        };
        let epi = Epilogue {
            bias: Some(&self.bias),
            residual,
            relu: self.relu,
        };
        let x = f32_slice(s1, l1, "input")?;
        let w = f32_slice(s2, l2, "weight")?;
        let y = conv_forward(x, w, &g, epi);
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.cout, g.ho, g.wo))))
    }
}

impl CustomOp2 for Conv2dBiasInference {
    fn name(&self) -> &'static str {
        "conv2d-gemm-bias-inference"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward((s1, l1), (s2, l2), None)
    }
}

impl CustomOp3 for Conv2dBiasInference {
    fn name(&self) -> &'static str {
        "conv2d-gemm-bias-residual-inference"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward((s1, l1), (s2, l2), Some((s3, l3)))
    }
}

/// relu(conv(x) + bias + residual) fused when nothing needs a gradient (CPU f32); `None`
/// otherwise.
pub fn conv2d_bias_residual_inference(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    residual: &Tensor,
    stride: usize,
    padding: usize,
) -> Result<Option<Tensor>> {
    if !(cpu_f32(x) && cpu_f32(w) && cpu_f32(bias) && cpu_f32(residual))
        || x.track_op()
        || w.track_op()
        || bias.track_op()
        || residual.track_op()
    {
        return Ok(None);
    }
    let op = Conv2dBiasInference {
        stride,
        padding,
        bias: bias.to_vec1()?,
        relu: true,
    };
    Ok(Some(x.contiguous()?.apply_op3_no_bwd(
        &w.contiguous()?,
        &residual.contiguous()?,
        &op,
    )?))
}

fn cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == candle_core::DType::F32
}

/// Convolution through [`Conv2dGemm`] (CPU, f32); other devices and dtypes use candle's conv2d.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    if cpu_f32(x) && cpu_f32(w) {
        x.contiguous()?.apply_op2(&w.contiguous()?, {
            let op = Conv2dGemm::new(stride, padding);
            if w.track_op() {
                op.keeping_cols()
            } else {
                op
            }
        })
    } else {
        x.conv2d(w, padding, stride, 1, 1)
    }
}

/// conv + bias (+ ReLU) fused when nothing needs a gradient (CPU f32); `None` otherwise.
pub fn conv2d_bias_inference(
    x: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
    relu: bool,
) -> Result<Option<Tensor>> {
    if !(cpu_f32(x) && cpu_f32(w) && cpu_f32(bias))
        || x.track_op()
        || w.track_op()
        || bias.track_op()
    {
        return Ok(None);
    }
    let op = Conv2dBiasInference {
        stride,
        padding,
        bias: bias.to_vec1()?,
        relu,
    };
    Ok(Some(
        x.contiguous()?.apply_op2_no_bwd(&w.contiguous()?, &op)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::SplitMix64;
    use candle_core::{Device, Var};

    fn rand_vec(n: usize, seed: u64) -> Vec<f64> {
        let mut r = SplitMix64::new(seed);
        (0..n).map(|_| r.normal()).collect()
    }

    /// Direct f64 convolution: the reference.
    fn naive_fwd(x: &[f64], w: &[f64], g: &Geom) -> Vec<f64> {
        let mut y = vec![0f64; g.n * g.cout * g.hw_out()];
        for n in 0..g.n {
            for o in 0..g.cout {
                for oy in 0..g.ho {
                    for ox in 0..g.wo {
                        let mut s = 0f64;
                        for c in 0..g.cin {
                            for ky in 0..g.k {
                                for kx in 0..g.k {
                                    let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                                    let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                                    if iy >= 0
                                        && ix >= 0
                                        && (iy as usize) < g.h
                                        && (ix as usize) < g.w
                                    {
                                        s += x[((n * g.cin + c) * g.h + iy as usize) * g.w
                                            + ix as usize]
                                            * w[((o * g.cin + c) * g.k + ky) * g.k + kx];
                                    }
                                }
                            }
                        }
                        y[((n * g.cout + o) * g.ho + oy) * g.wo + ox] = s;
                    }
                }
            }
        }
        y
    }

    fn max_rel(a: &[f32], b: &[f64]) -> f64 {
        let scale = b.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-12);
        a.iter()
            .zip(b)
            .fold(0f64, |m, (x, y)| m.max((*x as f64 - y).abs()))
            / scale
    }

    /// Loss L = Σ y·r: dL/dy = r. Checks forward, both gradients against the f64 reference
    /// (finite differences of the direct convolution), and against candle's stock autograd.
    fn check(n: usize, cin: usize, cout: usize, h: usize, w: usize, k: usize, stride: usize) {
        let pad = k / 2;
        let dev = Device::Cpu;
        let g = Geom::new((n, cin, h, w), (cout, cin, k, k), stride, pad).unwrap();
        let x64 = rand_vec(n * cin * h * w, 1 + h as u64);
        let w64 = rand_vec(cout * cin * k * k, 2 + w as u64);
        let r64 = rand_vec(n * cout * g.hw_out(), 3);
        let to32 = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        // Round inputs to f32 so both sides see the same values.
        let x64: Vec<f64> = to32(&x64).into_iter().map(f64::from).collect();
        let w64: Vec<f64> = to32(&w64).into_iter().map(f64::from).collect();
        let r64: Vec<f64> = to32(&r64).into_iter().map(f64::from).collect();

        let xv = Var::from_vec(to32(&x64), (n, cin, h, w), &dev).unwrap();
        let wv = Var::from_vec(to32(&w64), (cout, cin, k, k), &dev).unwrap();
        let r = Tensor::from_vec(to32(&r64), (n, cout, g.ho, g.wo), &dev).unwrap();
        let y = conv2d(xv.as_tensor(), wv.as_tensor(), stride, pad).unwrap();
        let grads = (y.clone() * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gx: Vec<f32> = grads
            .get(xv.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let gw: Vec<f32> = grads
            .get(wv.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let y: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        let tag = format!("n{n} c{cin}->{cout} {h}x{w} k{k} s{stride}");
        assert!(
            max_rel(&y, &naive_fwd(&x64, &w64, &g)) < 1e-5,
            "forward {tag}"
        );

        // The loss is linear in x and in w, so central differences with step 1 are exact in f64.
        let loss = |x: &[f64], w: &[f64]| -> f64 {
            naive_fwd(x, w, &g)
                .iter()
                .zip(&r64)
                .map(|(a, b)| a * b)
                .sum()
        };
        // A spread sample of elements (every element would make the test quadratic).
        let sample = |len: usize| -> Vec<usize> {
            let m = len.min(24);
            (0..m).map(|j| j * (len - 1) / (m - 1).max(1)).collect()
        };
        let fd = |which: usize, idx: &[usize]| -> Vec<f64> {
            idx.iter()
                .map(|&i| {
                    let (mut xp, mut wp) = (x64.clone(), w64.clone());
                    let (mut xm, mut wm) = (x64.clone(), w64.clone());
                    if which == 0 {
                        xp[i] += 1.0;
                        xm[i] -= 1.0;
                    } else {
                        wp[i] += 1.0;
                        wm[i] -= 1.0;
                    }
                    (loss(&xp, &wp) - loss(&xm, &wm)) / 2.0
                })
                .collect()
        };
        let (ix, iw) = (sample(x64.len()), sample(w64.len()));
        let pick = |v: &[f32], idx: &[usize]| idx.iter().map(|&i| v[i]).collect::<Vec<f32>>();
        assert!(
            max_rel(&pick(&gx, &ix), &fd(0, &ix)) < 1e-5,
            "input grad vs finite differences {tag}"
        );
        assert!(
            max_rel(&pick(&gw, &iw), &fd(1, &iw)) < 1e-5,
            "weight grad vs finite differences {tag}"
        );

        // candle's stock autograd (only where it works: equal H/W parity at stride 2)
        if stride == 1 || h % 2 == w % 2 {
            let ys = xv
                .as_tensor()
                .conv2d(wv.as_tensor(), pad, stride, 1, 1)
                .unwrap();
            let gs = (ys * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let sx: Vec<f32> = gs
                .get(xv.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let sw: Vec<f32> = gs
                .get(wv.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let to64 = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
            assert!(
                max_rel(&gx, &to64(&sx)) < 1e-5,
                "input grad vs candle {tag}"
            );
            assert!(
                max_rel(&gw, &to64(&sw)) < 1e-5,
                "weight grad vs candle {tag}"
            );
        }
    }

    #[test]
    fn gradients_on_a_grid_of_shapes() {
        for &k in &[1, 3, 7] {
            for &stride in &[1, 2] {
                for &(h, w) in &[(8, 6), (7, 9), (8, 7), (9, 9)] {
                    for &n in &[1, 8] {
                        let (h, w) = if k == 7 { (h + 4, w + 4) } else { (h, w) };
                        check(n, 3, 4, h, w, k, stride);
                    }
                }
            }
        }
    }

    #[test]
    fn image_input_gets_no_gradient() {
        let dev = Device::Cpu;
        let x = Tensor::ones((2, 3, 8, 8), candle_core::DType::F32, &dev).unwrap();
        let w = Var::ones((4, 3, 3, 3), candle_core::DType::F32, &dev).unwrap();
        let y = conv2d(&x, w.as_tensor(), 2, 1).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        assert!(g.get(&x).is_none());
        assert!(g.get(w.as_tensor()).is_some());
    }

    #[test]
    fn fused_residual_equals_conv_bias_add_relu() {
        let dev = Device::Cpu;
        // batch 8 of small maps: images are grouped, so every group finds its part of the residual
        for (n, cin, cout, h, w, k, stride) in [
            (8, 16, 32, 8, 4, 1, 1),
            (3, 8, 12, 9, 7, 3, 2),
            (1, 4, 6, 5, 5, 3, 1),
        ] {
            let ho = (h + 2 * (k / 2) - k) / stride + 1;
            let wo = (w + 2 * (k / 2) - k) / stride + 1;
            let t = |v: Vec<f64>, shape: &[usize]| {
                Tensor::from_vec(v.iter().map(|&x| x as f32).collect::<Vec<_>>(), shape, &dev)
                    .unwrap()
            };
            let x = t(rand_vec(n * cin * h * w, 1), &[n, cin, h, w]);
            let wt = t(rand_vec(cout * cin * k * k, 2), &[cout, cin, k, k]);
            let b = t(rand_vec(cout, 3), &[cout]);
            let r = t(rand_vec(n * cout * ho * wo, 4), &[n, cout, ho, wo]);
            let fused = conv2d_bias_residual_inference(&x, &wt, &b, &r, stride, k / 2)
                .unwrap()
                .unwrap();
            let reference = (x
                .conv2d(&wt, k / 2, stride, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, cout, 1, 1)).unwrap())
                .unwrap()
                + &r)
                .unwrap()
                .relu()
                .unwrap();
            let d: f32 = (fused - reference)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(d < 1e-4, "n {n} cin {cin} k {k}: {d}");
        }
    }
}
