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

/// The padded image into `padded`, then the output of every channel
/// tile into `tile_y` ([cout rounded up to 6][hw]).
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
            // ho + k − 1 = hp, wo + k − 1 = Wp). Weights (tile j, tap, c0..c0+cb) in wpack. Writes (and with c0 > 0 reads, of what the first block stored):
            // 6 rows of 64 at (j·6 + o)·out + p0, inside the tiles·6 × out buffer.
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
    // SAFETY: the tiles stored all tiles·6 × out elements.
    unsafe { tile_y.set_len(tiles * NR * hw) };
}

/// The tiles' output (the first hw of each channel row) → the image's, with the epilogue.
fn finish(tile_y: &[f32], g: &Geom, epi: Epilogue, offset: usize, y: &mut [MaybeUninit<f32>]) {
    let hw = g.hw_out();
    for (o, dst) in y.chunks_exact_mut(hw).enumerate() {
        let b = epi.bias.map_or(0.0, |b| b[o]);
        let src = &tile_y[o * hw..o * hw + hw];
        match epi.residual {
            Some(r) => {
                let r = &r[offset + o * hw..offset + (o + 1) * hw];
                for ((d, &v), &rv) in dst.iter_mut().zip(src).zip(r) {
                    let s = v + b + rv;
                    d.write(if epi.relu { s.max(0.0) } else { s });
                }
            }
            None => {
                for (d, &v) in dst.iter_mut().zip(src) {
                    let s = v + b;
                    d.write(if epi.relu { s.max(0.0) } else { s });
                }
            }
        }
    }
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

    /// y[n, o, oy, ox] = Σ w[o, c, ky, kx] · x[n, c, oy + ky − p, ox + kx − p], in f64.
    fn reference(x: &[f32], w: &[f32], g: &Geom) -> Vec<f64> {
        let mut y = vec![0f64; g.n * g.cout * g.hw_out()];
        for n in 0..g.n {
            for o in 0..g.cout {
                for oy in 0..g.ho {
                    for ox in 0..g.wo {
                        let mut acc = 0f64;
                        for c in 0..g.cin {
                            for ky in 0..g.k {
                                for kx in 0..g.k {
                                    let iy = (oy + ky) as isize - g.pad as isize;
                                    let ix = (ox + kx) as isize - g.pad as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let xv = x
                                        [((n * g.cin + c) * g.h + iy as usize) * g.w + ix as usize];
                                    let wv = w[((o * g.cin + c) * g.k + ky) * g.k + kx];
                                    acc += wv as f64 * xv as f64;
                                }
                            }
                        }
                        y[((n * g.cout + o) * g.ho + oy) * g.wo + ox] = acc;
                    }
                }
            }
        }
        y
    }

    #[test]
    fn direct_conv_equals_the_definition() {
        if !available() {
            eprintln!("no AVX-512F here: the direct kernel is not used on this CPU");
            return;
        }
        let mut rng = crate::init::SplitMix64::new(11);
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
        let (mut a, mut b) = (vec![], vec![]);
        for _ in 0..7 {
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
        a.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        let gf = 2.0 * (n * cout * g.hw_out() * g.ckk()) as f64 / 1e6;
        println!(
            "{cin:4} {h:3}x{w:<3} {cout:4}: gemm {:6.1} ms ({:5.1} GF/s), direct {:6.1} ms ({:5.1} GF/s), direct/gemm time {:.3}",
            a[3], gf / a[3], b[3], gf / b[3], b[3] / a[3]
        );
    }
}
