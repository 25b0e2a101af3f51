//! Stride-1 convolution without im2col: an AVX-512 kernel that reads the zero-padded input in
//! place, k·k shifted views of it, and keeps a 64-pixel × 6-channel output tile in registers
//! across all taps and input channels.
//!
//! Output pixel (oy, ox) of tap (ky, kx) reads input (oy + ky − p, ox + kx − p). With the input
//! zero-padded to width Wp = w + 2p, 16 pixels of output row oy read 16 contiguous floats of
//! padded row oy + ky from column ox + kx: one plain vector load per tap and channel, where the
//! output rows are whole vectors (wo a multiple of 16: ResNet layer1 and layer2 at 256×128).
//! The im2col path wrote k·k copies of the input (4.7 MB an image at a 64-channel 64×32 map:
//! L3), and gemm read them again to pack them; here the input is copied once and read from
//! L1/L2. On 8-wide maps (layer3 and layer4) gemm stays: k column-shifted copies of the input
//! made those rows contiguous too, but ran at 0.8–0.9× gemm's speed there (`direct_speed`).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::{Epilogue, Geom};

/// Output pixels a tile: four AVX-512 vectors.
const MR: usize = 64;
/// Output channels a tile: 24 accumulators of the 32 vector registers.
const NR: usize = 6;

/// Whether this CPU runs the kernel (AVX-512F).
pub(crate) fn available() -> bool {
    static AVX512: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVX512.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Whether [`conv_forward`] serves this geometry: stride 1, a spatial kernel, output rows of
/// whole vectors and a whole number of 64-pixel tiles.
pub(crate) fn serves(g: &Geom) -> bool {
    available()
        && g.stride == 1
        && g.k > 1
        && g.wo.is_multiple_of(16)
        && g.hw_out().is_multiple_of(MR)
}

/// How one image is laid out: the zero-padded input (planes of hp × Wp floats) and the taps'
/// offsets in it.
struct Plan {
    wp: usize,
    plane: usize,
    /// Where tap (ky, kx) starts: ky·Wp + kx.
    taps: Vec<usize>,
}

impl Plan {
    fn new(g: &Geom) -> Self {
        let wp = g.w + 2 * g.pad;
        Self {
            wp,
            plane: (g.h + 2 * g.pad) * wp,
            taps: (0..g.k * g.k).map(|t| (t / g.k) * wp + t % g.k).collect(),
        }
    }

    /// Where the four vectors of the tile at output pixel p0 start in a padded plane.
    fn vectors(&self, p0: usize, wo: usize) -> [usize; 4] {
        std::array::from_fn(|v| {
            let q = p0 + 16 * v;
            (q / wo) * self.wp + q % wo
        })
    }

    /// The zero-padded image into `buf`.
    fn pad(&self, x: &[f32], g: &Geom, buf: &mut Vec<f32>) {
        buf.clear();
        buf.resize(g.cin * self.plane, 0.0);
        for (src, dst) in x
            .chunks_exact(g.h * g.w)
            .zip(buf.chunks_exact_mut(self.plane))
        {
            for (r, row) in src.chunks_exact(g.w).enumerate() {
                let at = (r + g.pad) * self.wp + g.pad;
                dst[at..at + g.w].copy_from_slice(row);
            }
        }
    }
}

/// Input channels a pass over the tiles: a tile's input (64 planes × 64 + (k − 1)(Wp + 1)
/// floats, ~34 KB at Wp = 34) stays in L1 across the channel tiles.
const CB: usize = 64;

/// W [cout × cin × k × k] as [cout/6 tiles][tap][cin][6] (channels past cout are zeros).
fn pack_weights(w: &[f32], g: &Geom) -> Vec<f32> {
    let (kk, cin) = (g.k * g.k, g.cin);
    let tiles = g.cout.div_ceil(NR);
    let mut out = vec![0f32; tiles * kk * cin * NR];
    for (j, tile) in out.chunks_exact_mut(kk * cin * NR).enumerate() {
        for o in 0..NR.min(g.cout - j * NR) {
            let co = j * NR + o;
            for c in 0..cin {
                for t in 0..kk {
                    tile[(t * cin + c) * NR + o] = w[(co * cin + c) * kk + t];
                }
            }
        }
    }
    out
}

/// y = conv(x, w) (+ the epilogue) for every image, one image a task.
pub(crate) fn conv_forward(x: &[f32], w: &[f32], g: &Geom, epi: Epilogue) -> Vec<f32> {
    assert!(serves(g));
    let (img, hw) = (g.cin * g.h * g.w, g.hw_out());
    assert_eq!(x.len(), g.n * img);
    assert_eq!(w.len(), g.cout * g.ckk());
    let plan = Plan::new(g);
    let wpack = pack_weights(w, g);
    let total = g.n * g.cout * hw;
    let mut y: Vec<f32> = Vec::with_capacity(total);
    y.spare_capacity_mut()[..total]
        .par_chunks_mut(g.cout * hw)
        .zip(x.par_chunks(img))
        .enumerate()
        .for_each_init(
            || (Vec::new(), Vec::new()),
            |(padded, tile_y), (i, (yi, xi))| {
                conv_image(xi, &wpack, g, &plan, padded, tile_y);
                finish(tile_y, g, epi, i * g.cout * hw, yi);
            },
        );
    // SAFETY: the images cover all `total` elements and `finish` writes each image's whole.
    unsafe { y.set_len(total) };
    y
}

/// Whether the pixel blocks are the outer loop within a channel block: then a tile's input
/// stays in L1 across the channel tiles, and the block's weights (k·k·CB·cout) must stay in L2;
/// when they would not, each channel tile's weights stay in L1 across the pixel blocks instead.
fn pixels_outer(g: &Geom) -> bool {
    g.k * g.k * CB.min(g.cin) * g.cout * std::mem::size_of::<f32>() <= 512 << 10
}

/// The padded image into `padded`, then the output of every channel tile into `tile_y`
/// ([cout rounded up to 6][hw]).
fn conv_image(
    x: &[f32],
    wpack: &[f32],
    g: &Geom,
    plan: &Plan,
    padded: &mut Vec<f32>,
    tile_y: &mut Vec<f32>,
) {
    plan.pad(x, g, padded);
    let hw = g.hw_out();
    let tiles = g.cout.div_ceil(NR);
    // every element is stored by the first channel block's tiles below
    tile_y.clear();
    tile_y.reserve(tiles * NR * hw);
    let dst = tile_y.spare_capacity_mut().as_mut_ptr().cast::<f32>();
    let per_tile = g.k * g.k * g.cin * NR;
    for c0 in (0..g.cin).step_by(CB) {
        let cb = CB.min(g.cin - c0);
        let run = |p0: usize, j: usize| {
            // SAFETY: avx512f is present (`serves`). Reads, for each tap, channel c < cin and
            // vector: 16 floats of plane c, a row segment (oy·Wp + ox, ox + 16 ≤ wo) whose
            // last read, (oy + k − 1)·Wp + ox + 15 + k − 1, is below hp·Wp = plane (stride 1:
            // ho + k − 1 = hp, wo + k − 1 = Wp). Weights (tile j, tap, c0..c0+cb) in wpack.
            // Writes (and with c0 > 0 reads, of what the first block stored): 6 rows of 64 at
            // (j·6 + o)·hw + p0 (p0 + 64 ≤ hw), inside the tiles·6 × hw buffer.
            unsafe {
                tile(
                    (padded.as_ptr().add(c0 * plan.plane), plan.vectors(p0, g.wo)),
                    (plan.plane, cb),
                    &plan.taps,
                    (wpack.as_ptr().add(j * per_tile + c0 * NR), g.cin * NR),
                    dst.add(j * NR * hw + p0),
                    hw,
                    c0 > 0,
                );
            }
        };
        if pixels_outer(g) {
            for p0 in (0..hw).step_by(MR) {
                for j in 0..tiles {
                    run(p0, j);
                }
            }
        } else {
            for j in 0..tiles {
                for p0 in (0..hw).step_by(MR) {
                    run(p0, j);
                }
            }
        }
    }
    // SAFETY: the first channel block's tiles stored all tiles·6 × hw elements.
    unsafe { tile_y.set_len(tiles * NR * hw) };
}

/// The tiles' output (the first hw of each channel row) → the image's, with the epilogue.
fn finish(tile_y: &[f32], g: &Geom, epi: Epilogue, offset: usize, y: &mut [MaybeUninit<f32>]) {
    let hw = g.hw_out();
    for (o, dst) in y.chunks_exact_mut(hw).enumerate() {
        let b = epi.bias.map_or(0.0, |b| b[o]);
        for (d, &v) in dst.iter_mut().zip(&tile_y[o * hw..(o + 1) * hw]) {
            d.write(v + b);
        }
    }
    // SAFETY: the channel rows cover y (cout × hw) whole, each element written above.
    epi.finish(unsafe { super::assume_init(y) }, offset);
}

/// Whether [`weight_grad`] serves this geometry: as [`serves`], with output channels in whole
/// 64-channel tiles and input rows (c, ky, kx) in whole 6-row tiles (every ResNet 3×3 conv).
pub(crate) fn serves_weight_grad(g: &Geom) -> bool {
    serves(g) && g.cout.is_multiple_of(MR) && g.ckk().is_multiple_of(NR)
}

/// Output pixels a block of the weight gradient: gyᵀ of 64 channels over the block (32 KB)
/// stays in L1 across the input-row tiles.
const WG_PIXELS: usize = 128;

/// dL/dW [cout × cin·k·k] = Σ_images Σ_q gy[o, q] · x_padded[c, shifted q], without im2col:
/// gy is transposed to pixel-major so 64 output channels at a pixel are one tile row, and the 6
/// input rows of a tile are broadcast from the padded input in place. Images are split into
/// [`super::PARTS`] runs whatever the threads; each sums gWᵀ [ckk × cout], and the partials are
/// summed and transposed once.
pub(crate) fn weight_grad(x: &[f32], gy: &[f32], g: &Geom) -> Vec<f32> {
    assert!(serves_weight_grad(g));
    let (img, hw, ckk) = (g.cin * g.h * g.w, g.hw_out(), g.ckk());
    assert_eq!(x.len(), g.n * img);
    assert_eq!(gy.len(), g.n * g.cout * hw);
    let plan = Plan::new(g);
    // the padded-input offset of input row r = (c, ky, kx)
    let rows: Vec<usize> = (0..ckk)
        .map(|r| (r / (g.k * g.k)) * plan.plane + plan.taps[r % (g.k * g.k)])
        .collect();
    let per = g.n.div_ceil(super::PARTS).max(1);
    let partials: Vec<Vec<f32>> = x
        .par_chunks(per * img)
        .zip(gy.par_chunks(per * g.cout * hw))
        .map(|(xs, gys)| {
            let mut acc = vec![0f32; ckk * g.cout];
            let (mut padded, mut gyt) = (Vec::new(), Vec::new());
            for (xi, gyi) in xs.chunks_exact(img).zip(gys.chunks_exact(g.cout * hw)) {
                plan.pad(xi, g, &mut padded);
                transpose_into(gyi, g.cout, hw, &mut gyt);
                image_weight_grad(&padded, &gyt, g, &plan, &rows, &mut acc);
            }
            acc
        })
        .collect();
    super::sum_transposed(&partials, ckk, g.cout)
}

/// `dst` [hw × rows] = `src` [rows × hw]ᵀ.
fn transpose_into(src: &[f32], rows: usize, hw: usize, dst: &mut Vec<f32>) {
    const B: usize = 16;
    dst.clear();
    dst.resize(rows * hw, 0.0);
    for r0 in (0..rows).step_by(B) {
        for q0 in (0..hw).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                for q in q0..(q0 + B).min(hw) {
                    dst[q * rows + r] = src[r * hw + q];
                }
            }
        }
    }
}

/// acc [ckk × cout] += one image's Σ_q x_padded[row r at q] · gyᵀ[q][o].
fn image_weight_grad(
    padded: &[f32],
    gyt: &[f32],
    g: &Geom,
    plan: &Plan,
    rows: &[usize],
    acc: &mut [f32],
) {
    let hw = g.hw_out();
    assert_eq!(padded.len(), g.cin * plan.plane);
    assert_eq!(gyt.len(), hw * g.cout);
    assert_eq!(acc.len(), rows.len() * g.cout);
    let block_rows = (WG_PIXELS / g.wo).max(1);
    for oy0 in (0..g.ho).step_by(block_rows) {
        let oys = oy0..(oy0 + block_rows).min(g.ho);
        for ct in 0..g.cout / MR {
            for (jt, tile_rows) in rows.chunks_exact(NR).enumerate() {
                let offsets: [usize; NR] = std::array::from_fn(|j| tile_rows[j]);
                // SAFETY: avx512f is present (`serves`). Reads: gyᵀ rows q < hw, channels
                // ct·64..+64 ≤ cout; padded at row offset + oy·Wp + ox for oy < ho, ox < wo,
                // inside the row's plane as in the forward (oy + ky < hp, ox + kx < Wp). Writes
                // acc rows jt·6..+6 (< ckk, whole tiles), channels ct·64..+64.
                unsafe {
                    weight_tile(
                        padded.as_ptr(),
                        offsets,
                        (gyt.as_ptr().add(ct * MR), g.cout),
                        (oys.clone(), g.wo, plan.wp),
                        acc.as_mut_ptr().add(jt * NR * g.cout + ct * MR),
                        g.cout,
                    );
                }
            }
        }
    }
}

/// dst[j·ld + 16v + l] += Σ_{oy in rows} Σ_{ox < wo} x[offsets[j] + oy·Wp + ox] ·
/// gyt[(oy·wo + ox)·gy_ld + 16v + l] for j < 6, v < 4, l < 16.
///
/// # Safety
/// AVX-512F must be present and the reads and writes inside their buffers
/// ([`image_weight_grad`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weight_tile(
    x: *const f32,
    offsets: [usize; NR],
    (gyt, gy_ld): (*const f32, usize),
    (rows, wo, wp): (std::ops::Range<usize>, usize, usize),
    dst: *mut f32,
    ld: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); 24];
    for j in 0..NR {
        for v in 0..4 {
            acc[j * 4 + v] = _mm512_loadu_ps(dst.add(j * ld + v * 16));
        }
    }
    for oy in rows {
        let xr: [*const f32; NR] = std::array::from_fn(|j| x.add(offsets[j] + oy * wp));
        let mut gp = gyt.add(oy * wo * gy_ld);
        for ox in 0..wo {
            let a = [
                _mm512_loadu_ps(gp),
                _mm512_loadu_ps(gp.add(16)),
                _mm512_loadu_ps(gp.add(32)),
                _mm512_loadu_ps(gp.add(48)),
            ];
            for j in 0..NR {
                let b = _mm512_set1_ps(*xr[j].add(ox));
                for v in 0..4 {
                    acc[j * 4 + v] = _mm512_fmadd_ps(a[v], b, acc[j * 4 + v]);
                }
            }
            gp = gp.add(gy_ld);
        }
    }
    for j in 0..NR {
        for v in 0..4 {
            _mm512_storeu_ps(dst.add(j * ld + v * 16), acc[j * 4 + v]);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn weight_tile(
    _: *const f32,
    _: [usize; NR],
    _: (*const f32, usize),
    _: (std::ops::Range<usize>, usize, usize),
    _: *mut f32,
    _: usize,
) {
    unreachable!("the direct kernel runs only where `available` says AVX-512F is present");
}

/// dst[o·ld + 16v + l] (+)= Σ_tap Σ_{c < cb} x[c·plane + tap + vectors[v] + l] ·
/// w[tap·tap_stride + c·6 + o] for v < 4, l < 16, o < 6 (added to dst when `accumulate`).
///
/// # Safety
/// AVX-512F must be present and the reads and writes inside their buffers ([`conv_image`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile(
    (x, vectors): (*const f32, [usize; 4]),
    (plane, cb): (usize, usize),
    taps: &[usize],
    (w, tap_stride): (*const f32, usize),
    dst: *mut f32,
    ld: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); 24];
    if accumulate {
        for o in 0..NR {
            for v in 0..4 {
                acc[o * 4 + v] = _mm512_loadu_ps(dst.add(o * ld + v * 16));
            }
        }
    }
    for (ti, &t) in taps.iter().enumerate() {
        let mut xp = x.add(t);
        let mut wp = w.add(ti * tap_stride);
        for _ in 0..cb {
            let a = [
                _mm512_loadu_ps(xp.add(vectors[0])),
                _mm512_loadu_ps(xp.add(vectors[1])),
                _mm512_loadu_ps(xp.add(vectors[2])),
                _mm512_loadu_ps(xp.add(vectors[3])),
            ];
            for o in 0..NR {
                let b = _mm512_set1_ps(*wp.add(o));
                for v in 0..4 {
                    acc[o * 4 + v] = _mm512_fmadd_ps(a[v], b, acc[o * 4 + v]);
                }
            }
            xp = xp.add(plane);
            wp = wp.add(NR);
        }
    }
    for o in 0..NR {
        for v in 0..4 {
            _mm512_storeu_ps(dst.add(o * ld + v * 16), acc[o * 4 + v]);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile(
    _: (*const f32, [usize; 4]),
    _: (usize, usize),
    _: &[usize],
    _: (*const f32, usize),
    _: *mut f32,
    _: usize,
    _: bool,
) {
    unreachable!("the direct kernel runs only where `available` says AVX-512F is present");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The f64 definition of the conv (`conv_gemm`'s test reference) of f32 data.
    fn reference(x: &[f32], w: &[f32], g: &Geom) -> Vec<f64> {
        let f64s = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<_>>();
        super::super::tests::naive_fwd(&f64s(x), &f64s(w), g)
    }

    #[test]
    fn direct_conv_equals_the_definition() {
        if !available() {
            eprintln!("no AVX-512F here: the direct kernel is not used on this CPU");
            return;
        }
        let mut rng = reid_run::rng::SplitMix64::new(11);
        let mut r =
            |len: usize| -> Vec<f32> { (0..len).map(|_| rng.next_f64() as f32 - 0.5).collect() };
        // (n, cin, h, w, cout, k, pad): rows of one to three vectors, channel counts off the
        // 6-wide tiles, 'same' and 'valid' padding, kernels 3, 5 and 7
        for (n, cin, h, w, cout, k, pad) in [
            (2, 3, 8, 32, 7, 3, 1),
            (3, 16, 4, 16, 13, 3, 1),
            (2, 5, 8, 32, 6, 5, 2),
            (2, 4, 10, 34, 5, 3, 0),
            (2, 2, 4, 48, 8, 7, 3),
            // two channel blocks (the second adds to the first)
            (2, 70, 8, 16, 7, 3, 1),
            // weights past L2 for the pixel-outer order: channel tiles outer
            (1, 70, 4, 32, 230, 3, 1),
        ] {
            let g = Geom::new((n, cin, h, w), (cout, cin, k, k), 1, pad).unwrap();
            assert!(serves(&g), "{g:?}");
            let (x, wt) = (r(n * cin * h * w), r(cout * g.ckk()));
            let bias = r(cout);
            let residual = r(n * cout * g.hw_out());
            let want = reference(&x, &wt, &g);
            for (b, res, relu) in [
                (None, None, false),
                (Some(&bias[..]), None, true),
                (Some(&bias[..]), Some(&residual[..]), true),
                (None, Some(&residual[..]), false),
            ] {
                let epi = Epilogue {
                    bias: b,
                    residual: res,
                    relu,
                };
                let y = conv_forward(&x, &wt, &g, epi);
                for (i, (&v, &want)) in y.iter().zip(&want).enumerate() {
                    let o = (i / g.hw_out()) % cout;
                    let mut want =
                        want + b.map_or(0.0, |b| b[o] as f64) + res.map_or(0.0, |r| r[i] as f64);
                    if relu {
                        want = want.max(0.0);
                    }
                    assert!((v as f64 - want).abs() < 1e-4, "{g:?} [{i}] {v} vs {want}");
                }
            }
        }
        // 8-wide rows, a partial last tile, stride 2 and 1×1 go to gemm
        for (h, w, k, stride) in [(16, 8, 3, 1), (6, 16, 3, 1), (32, 32, 3, 2), (8, 16, 1, 1)] {
            let g = Geom::new((2, 4, h, w), (4, 4, k, k), stride, k / 2).unwrap();
            assert!(!serves(&g), "{g:?}");
        }
    }
    #[test]
    fn direct_weight_grad_equals_the_definition() {
        if !available() {
            return;
        }
        let mut rng = reid_run::rng::SplitMix64::new(12);
        let mut r =
            |len: usize| -> Vec<f32> { (0..len).map(|_| rng.next_f64() as f32 - 0.5).collect() };
        // (n, cin, h, w, cout, k, pad): images not a multiple of the threads, a last pixel block
        // of fewer rows (12 rows of 16 in blocks of 8), two output-channel tiles, a 5×5 kernel,
        // 'valid' padding
        for (n, cin, h, w, cout, k, pad) in [
            (3, 2, 12, 16, 64, 3, 1),
            (2, 4, 4, 32, 128, 3, 1),
            (2, 6, 8, 32, 64, 5, 2),
            (1, 2, 6, 18, 64, 3, 0),
        ] {
            let g = Geom::new((n, cin, h, w), (cout, cin, k, k), 1, pad).unwrap();
            assert!(serves_weight_grad(&g), "{g:?}");
            let (x, gy) = (r(n * cin * h * w), r(n * cout * g.hw_out()));
            let got = weight_grad(&x, &gy, &g);
            assert_eq!(got.len(), cout * g.ckk());
            for o in 0..cout {
                for c in 0..cin {
                    for ky in 0..k {
                        for kx in 0..k {
                            let mut want = 0f64;
                            for i in 0..n {
                                for oy in 0..g.ho {
                                    for ox in 0..g.wo {
                                        let iy = (oy + ky) as isize - pad as isize;
                                        let ix = (ox + kx) as isize - pad as isize;
                                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize
                                        {
                                            continue;
                                        }
                                        let xv =
                                            x[((i * cin + c) * h + iy as usize) * w + ix as usize];
                                        let gv = gy[((i * cout + o) * g.ho + oy) * g.wo + ox];
                                        want += xv as f64 * gv as f64;
                                    }
                                }
                            }
                            let v = got[((o * cin + c) * k + ky) * k + kx] as f64;
                            assert!(
                                (v - want).abs() < 1e-4,
                                "{g:?} ({o},{c},{ky},{kx}): {v} vs {want}"
                            );
                        }
                    }
                }
            }
        }
        // 48 output channels, an odd input-row count: gemm's
        for (cin, cout) in [(2, 48), (3, 64)] {
            let g = Geom::new((2, cin, 4, 16), (cout, cin, 3, 3), 1, 1).unwrap();
            assert!(!serves_weight_grad(&g), "{g:?}");
        }
    }
}

/// The direct kernel against im2col + gemm on the stride-1 3×3 shapes it serves of a ResNet-18
/// at 256×128 and 128×64 (batch 32), alternating, medians of 7 (a measurement, not a check):
/// `cargo test --release -p reid-model --lib direct_speed -- --ignored --nocapture`.
#[cfg(test)]
#[test]
#[ignore]
fn direct_speed() {
    let n = 32;
    for (cin, h, w, cout) in [(64, 64, 32, 64), (128, 32, 16, 128), (64, 32, 16, 64)] {
        let g = Geom::new((n, cin, h, w), (cout, cin, 3, 3), 1, 1).unwrap();
        assert!(serves(&g), "{g:?}");
        let x: Vec<f32> = (0..n * cin * h * w)
            .map(|i| (i % 13) as f32 - 6.0)
            .collect();
        let wt: Vec<f32> = (0..cout * g.ckk()).map(|i| (i % 7) as f32 * 0.1).collect();
        let gy: Vec<f32> = (0..n * cout * g.hw_out())
            .map(|i| (i % 5) as f32 - 2.0)
            .collect();
        let (mut a, mut b, mut c, mut d) = (vec![], vec![], vec![], vec![]);
        for _ in 0..7 {
            let t = std::time::Instant::now();
            std::hint::black_box(super::conv_weight_grad_gemm(&x, &gy, &g, None));
            c.push(t.elapsed().as_secs_f64() * 1e3);
            let t = std::time::Instant::now();
            std::hint::black_box(weight_grad(&x, &gy, &g));
            d.push(t.elapsed().as_secs_f64() * 1e3);
            let t = std::time::Instant::now();
            std::hint::black_box(super::conv_forward_gemm(
                &x,
                &wt,
                &g,
                Epilogue::default(),
                false,
            ));
            a.push(t.elapsed().as_secs_f64() * 1e3);
            let t = std::time::Instant::now();
            std::hint::black_box(conv_forward(&x, &wt, &g, Epilogue::default()));
            b.push(t.elapsed().as_secs_f64() * 1e3);
        }
        for v in [&mut a, &mut b, &mut c, &mut d] {
            v.sort_by(f64::total_cmp);
        }
        let gf = 2.0 * (n * cout * g.hw_out() * g.ckk()) as f64 / 1e6;
        println!(
            "{cin:4} {h:3}x{w:<3} {cout:4} weight grad: gemm {:6.1} ms ({:5.1} GF/s), direct {:6.1} ms ({:5.1} GF/s), direct/gemm time {:.3}",
            c[3], gf / c[3], d[3], gf / d[3], d[3] / c[3]
        );
        println!(
            "{cin:4} {h:3}x{w:<3} {cout:4}: gemm {:6.1} ms ({:5.1} GF/s), direct {:6.1} ms ({:5.1} GF/s), direct/gemm time {:.3}",
            a[3], gf / a[3], b[3], gf / b[3], b[3] / a[3]
        );
    }
}
