//! Columns of an image for a conv as a matrix product (im2col), their scatter-add back
//! (col2im), and the layout helpers of the gemm operands.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::*;

/// col[(c·k + ky)·k + kx][oy·wo + ox] = x[c, oy·s + ky − p, ox·s + kx − p] (0 outside).
/// Row r of `col` starts at r·ld (ld ≥ ho·wo), so several images can share one column block.
pub(crate) fn im2col(x: &[f32], g: &Geom, col: &mut [MaybeUninit<f32>], ld: usize, parallel: bool) {
    if g.hw_out() <= PADDED_IM2COL_MAX_HW {
        im2col_padded(x, g, col, ld, parallel);
    } else {
        im2col_rows(x, g, col, ld, parallel);
    }
}

/// Output maps up to this many pixels take [`im2col_padded`]: a late layer's rows are a few
/// pixels long (8 at ResNet-18 128×64's layer4), and the row path's per-row work — bounds,
/// memset and memcpy calls for 2-pixel runs — cost more than the gemm on them (a third of
/// that layer's forward).
pub(crate) const PADDED_IM2COL_MAX_HW: usize = 64;

/// [`im2col`] one input channel at a time from a zero-padded copy of its plane: each of the
/// channel's k·k rows is then a plain strided read, with no bounds or zero runs.
pub(crate) fn im2col_padded(
    x: &[f32],
    g: &Geom,
    col: &mut [MaybeUninit<f32>],
    ld: usize,
    parallel: bool,
) {
    let (k, hw) = (g.k, g.hw_out());
    if hw == 0 {
        return;
    }
    let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
    let per_channel = |c: usize, rows: &mut [MaybeUninit<f32>], padded: &mut Vec<f32>| {
        padded.clear();
        padded.resize(hp * wp, 0.0);
        let plane = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for (y, src) in plane.chunks_exact(g.w.max(1)).enumerate() {
            let at = (y + g.pad) * wp + g.pad;
            padded[at..at + g.w].copy_from_slice(src);
        }
        for (tap, row) in rows.chunks_mut(ld).enumerate() {
            let (ky, kx) = (tap / k, tap % k);
            for (oy, out) in row[..hw].chunks_exact_mut(g.wo).enumerate() {
                let src = &padded[(oy * g.stride + ky) * wp + kx..];
                for (ox, o) in out.iter_mut().enumerate() {
                    o.write(src[ox * g.stride]);
                }
            }
        }
    };
    // a channel's k·k rows; the last chunk may end early, after its last row's hw columns
    let chunk = ld * k * k;
    if parallel {
        col.par_chunks_mut(chunk)
            .take(g.cin)
            .enumerate()
            .for_each_init(Vec::new, |p, (c, rows)| per_channel(c, rows, p));
    } else {
        let mut padded = Vec::new();
        for (c, rows) in col.chunks_mut(chunk).take(g.cin).enumerate() {
            per_channel(c, rows, &mut padded);
        }
    }
}

/// [`im2col`] one row at a time, copying runs of the input rows.
pub(crate) fn im2col_rows(
    x: &[f32],
    g: &Geom,
    col: &mut [MaybeUninit<f32>],
    ld: usize,
    parallel: bool,
) {
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
pub(crate) fn same_size_shift(
    plane: &[f32],
    g: &Geom,
    ky: usize,
    kx: usize,
    out: &mut [MaybeUninit<f32>],
) {
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
        if n == 1 {
            // the 3×3 case: one store a row (a memset call per element cost ~3 % of a step)
            for row in out[..g.h * g.w].chunks_exact_mut(g.w) {
                row[first].write(0.0);
            }
        } else {
            for row in out[..g.h * g.w].chunks_exact_mut(g.w) {
                fill_u(&mut row[first..first + n], 0.0);
            }
        }
    }
}

/// gx[c, iy, ix] += col[r][oy·wo + ox]: the adjoint of [`im2col`] (same `ld`).
pub(crate) fn col2im_add(col: &[f32], g: &Geom, ld: usize, gx: &mut [f32], parallel: bool) {
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
pub(crate) fn interleave(src: &[f32], rows: usize, hw: usize, dst: &mut [MaybeUninit<f32>]) {
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

/// `v` holding `len` elements written by `fill`, its old contents dropped without a zeroing
/// pass (a fresh scratch buffer zeroed by `resize` cost ~2 % of a ResNet-18 train step).
///
/// # Safety
/// `fill` must write every one of the `len` elements it is given.
pub(crate) unsafe fn refill(
    v: &mut Vec<f32>,
    len: usize,
    fill: impl FnOnce(&mut [MaybeUninit<f32>]),
) -> &mut [f32] {
    v.clear();
    v.reserve(len);
    fill(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: the caller's contract: `fill` wrote all `len` elements.
    unsafe { v.set_len(len) };
    v
}

/// Write `v` to every element.
pub(crate) fn fill_u(dst: &mut [MaybeUninit<f32>], v: f32) {
    dst.iter_mut().for_each(|d| {
        d.write(v);
    });
}

/// Write `src` into `dst` (same length).
pub(crate) fn copy_u(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
    assert_eq!(dst.len(), src.len());
    for (d, &v) in dst.iter_mut().zip(src) {
        d.write(v);
    }
}

/// Initialised f32s as a write-only target for the functions above (they only ever write
/// initialised values through it, so the slice stays initialised).
pub(crate) fn as_uninit(s: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: same layout; nothing writes an uninitialised value through the returned slice.
    unsafe { &mut *(s as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

/// Rows [len / v.len() × ld]: row r filled with v[r]; returns the block initialised.
pub(crate) fn fill_rows<'a>(
    dst: &'a mut [MaybeUninit<f32>],
    ld: usize,
    v: &[f32],
) -> &'a mut [f32] {
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
pub(crate) fn deinterleave<'a>(
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
pub(crate) unsafe fn assume_init(s: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: MaybeUninit<f32> has f32's layout; the caller guarantees initialisation.
    unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<f32>(), s.len()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The padded-plane im2col writes the same columns, bit for bit, as the row path: every
    /// kernel size, stride and padding (wider than the kernel too), odd and even maps, two
    /// images sharing a column block (each image's block at its offset, the other untouched).
    #[test]
    fn padded_im2col_equals_the_row_path() {
        let mut checked = 0;
        for k in [1, 3, 5, 7] {
            for stride in [1, 2, 3] {
                for pad in 0..=k {
                    for (h, w) in [(1, 1), (4, 2), (5, 7), (8, 4), (9, 3), (16, 8)] {
                        let Ok(g) = Geom::new((2, 3, h, w), (2, 3, k, k), stride, pad) else {
                            continue;
                        };
                        let hw = g.hw_out();
                        let ld = 2 * hw + 1;
                        let x: Vec<f32> = (0..3 * h * w).map(|i| i as f32 - 7.5).collect();
                        for parallel in [false, true] {
                            let mut cols =
                                [vec![f32::NAN; g.ckk() * ld], vec![f32::NAN; g.ckk() * ld]];
                            for (path, col) in cols.iter_mut().enumerate() {
                                let at = &mut as_uninit(col)[hw..];
                                if path == 0 {
                                    im2col_rows(&x, &g, at, ld, parallel);
                                } else {
                                    im2col_padded(&x, &g, at, ld, parallel);
                                }
                            }
                            let bits =
                                |v: &[f32]| v.iter().map(|a| a.to_bits()).collect::<Vec<_>>();
                            assert_eq!(
                                bits(&cols[0]),
                                bits(&cols[1]),
                                "k {k} stride {stride} pad {pad} {h}x{w} parallel {parallel}"
                            );
                            // this image's block written, the rest left alone
                            for (r, row) in cols[1].chunks(ld).enumerate() {
                                assert!(row[..hw].iter().all(|v| v.is_nan()), "row {r}");
                                assert!(row[hw..2 * hw].iter().all(|v| !v.is_nan()), "row {r}");
                            }
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 200, "{checked}");
    }
}
