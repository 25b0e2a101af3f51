//! Columns of an image for a conv as a matrix product (im2col), their scatter-add back
//! (col2im), and the layout helpers of the gemm operands.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::*;

/// col[(c·k + ky)·k + kx][oy·wo + ox] = x[c, oy·s + ky − p, ox·s + kx − p] (0 outside).
/// Row r of `col` starts at r·ld (ld ≥ ho·wo), so several images can share one column block.
pub(crate) fn im2col(x: &[f32], g: &Geom, col: &mut [MaybeUninit<f32>], ld: usize, parallel: bool) {
    // Per image, timed against each other (`im2col_speed`): the row path's block copies win at
    // stride 1 (2–4× the padded path at 8×4 and 16×8); at stride 2 its rows are element-wise
    // strided reads, and the padded plane is 0.6–0.9× its time for 3×3 kernels, the phase
    // planes 0.4–0.5× for the 7×7 stem (which reads each input k·k/4 times).
    match (g.stride, g.k) {
        (1, _) => im2col_rows(x, g, col, ld, parallel),
        (_, k) if k >= 5 => im2col_phased(x, g, col, ld, parallel),
        _ => im2col_padded(x, g, col, ld, parallel),
    }
}

/// Run `fill(input plane, the channel's k·k rows, scratch)` over the input channels of one
/// image, in parallel when asked; the scratch buffer is reused across a thread's channels.
fn for_input_channels(
    x: &[f32],
    g: &Geom,
    col: &mut [MaybeUninit<f32>],
    ld: usize,
    parallel: bool,
    fill: impl Fn(&[f32], &mut [MaybeUninit<f32>], &mut Vec<f32>) + Sync,
) {
    if g.hw_out() == 0 {
        return;
    }
    let plane = |c: usize| &x[c * g.h * g.w..(c + 1) * g.h * g.w];
    // a channel's k·k rows; the last chunk may end early, after its last row's hw columns
    let chunk = ld * g.k * g.k;
    if parallel {
        col.par_chunks_mut(chunk)
            .take(g.cin)
            .enumerate()
            .for_each_init(Vec::new, |scratch, (c, rows)| fill(plane(c), rows, scratch));
    } else {
        let mut scratch = Vec::new();
        for (c, rows) in col.chunks_mut(chunk).take(g.cin).enumerate() {
            fill(plane(c), rows, &mut scratch);
        }
    }
}

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
    let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
    for_input_channels(x, g, col, ld, parallel, |plane, rows, padded| {
        padded.clear();
        padded.resize(hp * wp, 0.0);
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
    });
}

/// [`im2col`] one input channel at a time from the zero-padded plane split by column phase
/// (ix mod stride): every output row of a tap is then one contiguous run of a phase plane.
pub(crate) fn im2col_phased(
    x: &[f32],
    g: &Geom,
    col: &mut [MaybeUninit<f32>],
    ld: usize,
    parallel: bool,
) {
    let (k, s, hw) = (g.k, g.stride, g.hw_out());
    let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
    // phase plane q holds the padded columns q, q + s, q + 2s, … (pw of them, zero-filled)
    let pw = wp.div_ceil(s);
    for_input_channels(x, g, col, ld, parallel, |plane, rows, phases| {
        phases.clear();
        phases.resize(s * hp * pw, 0.0);
        for (y, src) in plane.chunks_exact(g.w.max(1)).enumerate() {
            for (ix, &v) in src.iter().enumerate() {
                let px = ix + g.pad;
                phases[((px % s) * hp + y + g.pad) * pw + px / s] = v;
            }
        }
        for (tap, row) in rows.chunks_mut(ld).enumerate() {
            let (ky, kx) = (tap / k, tap % k);
            let phase = &phases[(kx % s) * hp * pw..(kx % s + 1) * hp * pw];
            for (oy, out) in row[..hw].chunks_exact_mut(g.wo).enumerate() {
                let at = (oy * s + ky) * pw + kx / s;
                copy_u(out, &phase[at..at + g.wo]);
            }
        }
    });
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

    /// The padded-plane and phase-plane im2cols write the same columns, bit for bit, as the
    /// row path: every kernel size, stride and padding (wider than the kernel too), odd and
    /// even maps, two images sharing a column block (each image's block at its offset, the
    /// other untouched).
    #[test]
    fn padded_and_phased_im2col_equal_the_row_path() {
        type Im2col = fn(&[f32], &Geom, &mut [MaybeUninit<f32>], usize, bool);
        let paths: [(&str, Im2col); 3] = [
            ("rows", im2col_rows),
            ("padded", im2col_padded),
            ("phased", im2col_phased),
        ];
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
                        let bits = |v: &[f32]| v.iter().map(|a| a.to_bits()).collect::<Vec<_>>();
                        for parallel in [false, true] {
                            let cols = paths.map(|(_, path)| {
                                let mut col = vec![f32::NAN; g.ckk() * ld];
                                path(&x, &g, &mut as_uninit(&mut col)[hw..], ld, parallel);
                                col
                            });
                            for (p, col) in cols.iter().enumerate().skip(1) {
                                let what = format!(
                                    "{} k {k} stride {stride} pad {pad} {h}x{w} parallel {parallel}",
                                    paths[p].0
                                );
                                assert_eq!(bits(&cols[0]), bits(col), "{what}");
                                // this image's block written, the rest left alone
                                for (r, row) in col.chunks(ld).enumerate() {
                                    assert!(row[..hw].iter().all(|v| v.is_nan()), "{what} row {r}");
                                    assert!(
                                        row[hw..2 * hw].iter().all(|v| !v.is_nan()),
                                        "{what} row {r}"
                                    );
                                }
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

#[cfg(test)]
mod speed {
    use super::*;

    /// Time per image of the three im2col paths on the ResNet shapes (stem, stride-2 and
    /// stride-1 3×3 at 128×64 and 256×128), alternating in one process, best of 20: what
    /// [`im2col`] dispatches on. A measurement, not a check:
    /// `cargo test --release -p reid-model --lib im2col_speed -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn im2col_speed() {
        for &(cin, h, w, k, stride, pad) in &[
            (3usize, 128usize, 64usize, 7usize, 2usize, 3usize),
            (3, 256, 128, 7, 2, 3),
            (64, 32, 16, 3, 2, 1),
            (128, 16, 8, 3, 2, 1),
            (256, 8, 4, 3, 2, 1),
            (512, 4, 2, 3, 1, 1),
            (256, 8, 4, 3, 1, 1),
            (128, 16, 8, 3, 1, 1),
            (64, 64, 32, 3, 2, 1),
        ] {
            let g = Geom::new((1, cin, h, w), (8, cin, k, k), stride, pad).unwrap();
            let hw = g.hw_out();
            let x: Vec<f32> = (0..cin * h * w).map(|i| i as f32).collect();
            let mut col = vec![0f32; g.ckk() * hw];
            let mut best = [f64::MAX; 3];
            for _ in 0..20 {
                for (p, b) in best.iter_mut().enumerate() {
                    let t = std::time::Instant::now();
                    for _ in 0..10 {
                        let c = as_uninit(&mut col);
                        match p {
                            0 => im2col_rows(&x, &g, c, hw, false),
                            1 => im2col_padded(&x, &g, c, hw, false),
                            _ => im2col_phased(&x, &g, c, hw, false),
                        }
                        std::hint::black_box(&col);
                    }
                    *b = b.min(t.elapsed().as_secs_f64() * 1e5);
                }
            }
            println!(
                "{cin}@{h}x{w} k{k} s{stride}: rows {:.1} us padded {:.1} phased {:.1}",
                best[0], best[1], best[2]
            );
        }
    }
}
