//! The synthetic re-ID benchmark: drawn people under drawn cameras, written as real JPEG files
//! in the Market-1501 layout (or an imagefolder tree for a source / pre-training domain).
//!
//! An identity is a set of appearance parameters (clothing colours and pattern, body proportions,
//! skin, hair, bag, shoes). A camera has a viewpoint shift, scale, colour cast, brightness, blur,
//! noise and background. A *domain* (hashed from its name) fixes the palette identities draw
//! colours from and the style of its cameras, so a model trained on one domain loses accuracy on
//! another. `difficulty` in [0, 1] raises look-alike identities (fewer distinct colours),
//! occlusion, pose variation and noise. Every image has its own RNG stream, derived from
//! (seed, domain, identity, camera, index): the same seed gives the same bytes, in any order.

use std::path::{Path, PathBuf};

use image::codecs::jpeg::JpegEncoder;
use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// Which tree to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SynthLayout {
    /// `bounding_box_train`, `query`, `bounding_box_test` (first half of the ids train, the rest test).
    Market,
    /// `<class>/<image>.jpg`, every identity a class.
    ImageFolder,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SynthConfig {
    pub domain: String,
    pub ids: usize,
    pub cams: usize,
    /// Images per identity per camera it appears in.
    pub per_cam: usize,
    pub seed: u64,
    pub height: u32,
    pub width: u32,
    /// 0 = easy, 1 = hard (look-alikes, occlusion, pose, noise).
    pub difficulty: f32,
    pub layout: SynthLayout,
    /// Market layout: identities seen only at test time, beyond the `ids / 2` test half; each
    /// gives one query per camera it appears in and the rest of its images to the gallery (a
    /// test side large enough to resolve small differences, as Market-1501's 3 368 queries).
    #[serde(default)]
    pub extra_test_ids: usize,
    /// Market layout: gallery distractors (pid 0000), people who match no query.
    #[serde(default)]
    pub distractors: usize,
}

impl SynthConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(DataError::Invalid(m));
        if self.ids < 2 {
            return bad(format!(
                "--ids {}: at least 2 identities are needed",
                self.ids
            ));
        }
        if self.layout == SynthLayout::Market && self.ids < 4 {
            return bad(
                "a Market-layout domain needs at least 4 identities (half train, half test)".into(),
            );
        }
        if self.layout == SynthLayout::ImageFolder
            && (self.extra_test_ids > 0 || self.distractors > 0)
        {
            return bad(
                "extra test identities and distractors need the Market layout (an imagefolder has no test split)".into(),
            );
        }
        if self.cams < 2 || self.cams > 9 {
            return bad(format!(
                "--cams {}: between 2 and 9 cameras (file names hold one digit)",
                self.cams
            ));
        }
        if self.per_cam == 0 {
            return bad("--per-cam must be at least 1".into());
        }
        if self.height < 32 || self.width < 16 {
            return bad(format!(
                "image size {}x{} too small (at least 32x16)",
                self.height, self.width
            ));
        }
        if !(0.0..=1.0).contains(&self.difficulty) {
            return bad(format!("difficulty {} outside [0, 1]", self.difficulty));
        }
        // bounded before any work: `--ids 1000000000` ran silently for minutes
        if self.height > 2048 || self.width > 2048 {
            return bad(format!(
                "image size {}x{} too large (at most 2048 a side)",
                self.height, self.width
            ));
        }
        let images = (self.ids as u128) * (self.cams as u128) * (self.per_cam as u128)
            + self.extra_test_ids as u128 * self.cams as u128
            + self.distractors as u128;
        if images > MAX_IMAGES as u128 {
            return bad(format!(
                "{images} images (--ids {} × --cams {} × --per-cam {}, plus --extra-test-ids and \
                 --distractors): at most {MAX_IMAGES}",
                self.ids, self.cams, self.per_cam
            ));
        }
        Ok(())
    }
}

/// The most images one domain may have (MSMT17, the largest re-ID set, has 126 441).
pub const MAX_IMAGES: usize = 2_000_000;

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A deterministic RNG stream for a tuple of keys.
fn stream(keys: &[u64]) -> ChaCha8Rng {
    let mut h = 0x9E37_79B9_7F4A_7C15u64;
    for &k in keys {
        h = (h ^ k).wrapping_mul(0xBF58_476D_1CE4_E5B9).rotate_left(29) ^ (h >> 31);
    }
    ChaCha8Rng::seed_from_u64(h)
}

type Color = [f32; 3];

fn hsv(h: f32, s: f32, v: f32) -> Color {
    let h = h.rem_euclid(1.0) * 6.0;
    let c = v * s;
    let x = c * (1.0 - ((h % 2.0) - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [r + m, g + m, b + m]
}

/// Colours and camera style of a domain.
struct Domain {
    /// Clothing colours identities draw from (fewer = more look-alikes).
    palette: Vec<Color>,
    key: u64,
}

impl Domain {
    fn new(name: &str, seed: u64, difficulty: f32) -> Self {
        let key = fnv1a(name);
        let mut r = stream(&[seed, key, 0xD0]);
        // A domain favours a band of hues; its palette is drawn around it.
        let hue_centre: f32 = r.random();
        let hue_spread = 0.25 + 0.35 * r.random::<f32>();
        let n = (40.0 - 30.0 * difficulty).round().max(6.0) as usize;
        let palette = (0..n)
            .map(|_| {
                let h = hue_centre + hue_spread * (r.random::<f32>() - 0.5);
                let s = 0.25 + 0.7 * r.random::<f32>();
                let v = 0.2 + 0.75 * r.random::<f32>();
                hsv(h, s, v)
            })
            .collect();
        Self { palette, key }
    }
}

#[derive(Clone, Copy)]
enum Pattern {
    Solid,
    Stripes(u32),
    Checks(u32),
    Logo,
}

#[derive(Clone, Copy)]
enum Bag {
    None,
    Backpack,
    Handbag,
}

struct Identity {
    top: Color,
    pattern: Pattern,
    pattern_color: Color,
    bottom: Color,
    skin: Color,
    hair: Color,
    long_hair: bool,
    short_sleeves: bool,
    shoes: Color,
    bag: Bag,
    bag_color: Color,
    /// Body height and width factors.
    tall: f32,
    broad: f32,
}

impl Identity {
    fn new(domain: &Domain, seed: u64, id: usize) -> Self {
        let mut r = stream(&[seed, domain.key, 0x1D, id as u64]);
        let pick = |r: &mut ChaCha8Rng| domain.palette[r.random_range(0..domain.palette.len())];
        let top = pick(&mut r);
        let pattern_color = pick(&mut r);
        let bottom = pick(&mut r);
        let bag_color = pick(&mut r);
        let shoes = hsv(
            r.random(),
            0.3 * r.random::<f32>(),
            0.1 + 0.6 * r.random::<f32>(),
        );
        let tone = 0.35 + 0.55 * r.random::<f32>();
        let skin = [tone, tone * 0.78, tone * 0.62];
        let hair = hsv(
            0.05 + 0.08 * r.random::<f32>(),
            0.5 * r.random::<f32>(),
            0.05 + 0.5 * r.random::<f32>(),
        );
        let pattern = match r.random_range(0..5) {
            0 | 1 => Pattern::Solid,
            2 => Pattern::Stripes(2 + r.random_range(0..4)),
            3 => Pattern::Checks(2 + r.random_range(0..3)),
            _ => Pattern::Logo,
        };
        let bag = match r.random_range(0..4) {
            0 => Bag::Backpack,
            1 => Bag::Handbag,
            _ => Bag::None,
        };
        Self {
            top,
            pattern,
            pattern_color,
            bottom,
            skin,
            hair,
            long_hair: r.random::<f32>() < 0.35,
            short_sleeves: r.random::<f32>() < 0.4,
            shoes,
            bag,
            bag_color,
            tall: 0.86 + 0.12 * r.random::<f32>(),
            broad: 0.8 + 0.4 * r.random::<f32>(),
        }
    }
}

struct Camera {
    shift: f32,
    scale: f32,
    cast: Color,
    brightness: f32,
    blur: u32,
    noise: f32,
    bg_top: Color,
    bg_bottom: Color,
    /// Whether people are seen from behind (bags and hair show differently).
    from_back: bool,
}

impl Camera {
    fn new(domain: &Domain, seed: u64, cam: usize, difficulty: f32) -> Self {
        let mut r = stream(&[seed, domain.key, 0xCA, cam as u64]);
        let jitter = |r: &mut ChaCha8Rng, a: f32| 1.0 + a * (r.random::<f32>() - 0.5);
        let bg_h: f32 = r.random();
        Self {
            shift: 0.12 * (r.random::<f32>() - 0.5),
            scale: 0.85 + 0.13 * r.random::<f32>(),
            cast: [
                jitter(&mut r, 0.25),
                jitter(&mut r, 0.25),
                jitter(&mut r, 0.25),
            ],
            brightness: jitter(&mut r, 0.3),
            blur: r.random_range(0..2) + (difficulty > 0.6) as u32,
            noise: 0.01 + 0.05 * difficulty * r.random::<f32>(),
            bg_top: hsv(
                bg_h,
                0.05 + 0.2 * r.random::<f32>(),
                0.35 + 0.35 * r.random::<f32>(),
            ),
            bg_bottom: hsv(
                bg_h + 0.1,
                0.05 + 0.2 * r.random::<f32>(),
                0.25 + 0.35 * r.random::<f32>(),
            ),
            from_back: r.random::<f32>() < 0.4,
        }
    }
}

/// A float RGB canvas.
struct Canvas {
    w: i32,
    h: i32,
    px: Vec<Color>,
}

impl Canvas {
    fn rect(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, f: impl Fn(i32, i32) -> Color) {
        let (x0, x1) = ((x0.round() as i32).max(0), (x1.round() as i32).min(self.w));
        let (y0, y1) = ((y0.round() as i32).max(0), (y1.round() as i32).min(self.h));
        for y in y0..y1 {
            for x in x0..x1 {
                self.px[(y * self.w + x) as usize] = f(x, y);
            }
        }
    }

    fn ellipse(&mut self, cx: f32, cy: f32, rx: f32, ry: f32, c: Color) {
        let (x0, x1) = (
            ((cx - rx).floor() as i32).max(0),
            ((cx + rx).ceil() as i32).min(self.w),
        );
        let (y0, y1) = (
            ((cy - ry).floor() as i32).max(0),
            ((cy + ry).ceil() as i32).min(self.h),
        );
        for y in y0..y1 {
            for x in x0..x1 {
                let (dx, dy) = ((x as f32 + 0.5 - cx) / rx, (y as f32 + 0.5 - cy) / ry);
                if dx * dx + dy * dy <= 1.0 {
                    self.px[(y * self.w + x) as usize] = c;
                }
            }
        }
    }

    fn box_blur(&mut self, radius: u32) {
        if radius == 0 {
            return;
        }
        let r = radius as i32;
        for horizontal in [true, false] {
            let src = self.px.clone();
            for y in 0..self.h {
                for x in 0..self.w {
                    let mut acc = [0f32; 3];
                    let mut n = 0.0;
                    for d in -r..=r {
                        let (xx, yy) = if horizontal { (x + d, y) } else { (x, y + d) };
                        if xx >= 0 && xx < self.w && yy >= 0 && yy < self.h {
                            let p = src[(yy * self.w + xx) as usize];
                            for c in 0..3 {
                                acc[c] += p[c];
                            }
                            n += 1.0;
                        }
                    }
                    self.px[(y * self.w + x) as usize] = [acc[0] / n, acc[1] / n, acc[2] / n];
                }
            }
        }
    }
}

/// Draw one image of `id` seen by `cam`.
fn render(person: &Identity, cam: &Camera, cfg: &SynthConfig, r: &mut ChaCha8Rng) -> RgbImage {
    let (w, h) = (cfg.width as f32, cfg.height as f32);
    let mut cv = Canvas {
        w: cfg.width as i32,
        h: cfg.height as i32,
        px: vec![[0.0; 3]; (cfg.width * cfg.height) as usize],
    };
    let d = cfg.difficulty;
    // Background: vertical gradient with a floor band and texture.
    let floor = h * (0.8 + 0.1 * r.random::<f32>());
    let tex_seed: u32 = r.random();
    cv.rect(0.0, 0.0, w, h, |x, y| {
        let t = y as f32 / h;
        let base = if (y as f32) < floor {
            cam.bg_top
        } else {
            cam.bg_bottom
        };
        let n =
            (((x as u32).wrapping_mul(73_856_093) ^ (y as u32).wrapping_mul(19_349_663) ^ tex_seed)
                % 1000) as f32
                / 1000.0;
        let k = 0.85 + 0.25 * t + 0.08 * (n - 0.5);
        [base[0] * k, base[1] * k, base[2] * k]
    });
    // Body frame.
    let ph = h * cam.scale * person.tall * (1.0 + 0.04 * (r.random::<f32>() - 0.5));
    let top_y = (h - ph) * (0.3 + 0.4 * r.random::<f32>());
    let cx = w * (0.5 + cam.shift + 0.06 * (0.5 + d) * (r.random::<f32>() - 0.5));
    let facing = 0.75 + 0.25 * r.random::<f32>(); // side views look narrower
    let bw = w * 0.48 * person.broad * facing;
    let y = |f: f32| top_y + f * ph;
    let stride = (0.04 + 0.1 * d) * w * (r.random::<f32>() - 0.5) * 2.0;
    // Legs.
    let leg_w = bw * 0.42;
    for (side, phase) in [(-1.0, 1.0), (1.0, -1.0)] {
        let lx = cx + side * bw * 0.24 + phase * stride * 0.5;
        cv.rect(
            lx - leg_w / 2.0,
            y(0.52),
            lx + leg_w / 2.0,
            y(0.95),
            |_, _| person.bottom,
        );
        cv.rect(
            lx - leg_w / 2.0 - 1.0,
            y(0.95),
            lx + leg_w / 2.0 + 1.0,
            y(1.0),
            |_, _| person.shoes,
        );
    }
    // Backpack behind the torso when seen from behind, a strap-side block otherwise.
    if let Bag::Backpack = person.bag {
        let (x0, x1) = if cam.from_back {
            (cx - bw * 0.4, cx + bw * 0.4)
        } else {
            (cx + bw * 0.45, cx + bw * 0.62)
        };
        cv.rect(x0, y(0.2), x1, y(0.48), |_, _| person.bag_color);
    }
    // Arms.
    let arm_w = bw * 0.2;
    for side in [-1.0f32, 1.0] {
        let ax = cx + side * (bw / 2.0 + arm_w * 0.45);
        let sleeve_end = if person.short_sleeves { 0.3 } else { 0.5 };
        cv.rect(
            ax - arm_w / 2.0,
            y(0.19),
            ax + arm_w / 2.0,
            y(sleeve_end),
            |_, _| person.top,
        );
        cv.rect(
            ax - arm_w / 2.0,
            y(sleeve_end),
            ax + arm_w / 2.0,
            y(0.53),
            |_, _| person.skin,
        );
    }
    // Torso with its pattern.
    let (tx0, tx1, ty0, ty1) = (cx - bw / 2.0, cx + bw / 2.0, y(0.18), y(0.54));
    let (top, pc, pattern) = (person.top, person.pattern_color, person.pattern);
    cv.rect(tx0, ty0, tx1, ty1, |x, yy| {
        let (u, v) = (
            (x as f32 - tx0) / (tx1 - tx0),
            (yy as f32 - ty0) / (ty1 - ty0),
        );
        match pattern {
            Pattern::Solid => top,
            Pattern::Stripes(n) => {
                if ((v * n as f32 * 2.0) as u32).is_multiple_of(2) {
                    top
                } else {
                    pc
                }
            }
            Pattern::Checks(n) => {
                if (((u * n as f32) as u32) + ((v * n as f32 * 1.5) as u32)).is_multiple_of(2) {
                    top
                } else {
                    pc
                }
            }
            Pattern::Logo => {
                if (0.3..0.7).contains(&u) && (0.2..0.5).contains(&v) {
                    pc
                } else {
                    top
                }
            }
        }
    });
    if let Bag::Handbag = person.bag {
        cv.rect(cx + bw * 0.5, y(0.48), cx + bw * 0.8, y(0.62), |_, _| {
            person.bag_color
        });
    }
    // Head and hair.
    let hr = ph * 0.075;
    let hy = y(0.1);
    cv.ellipse(cx, hy, hr * 0.85, hr, person.skin);
    if cam.from_back {
        cv.ellipse(cx, hy, hr * 0.9, hr * 1.02, person.hair);
    } else {
        cv.ellipse(cx, hy - hr * 0.45, hr * 0.9, hr * 0.6, person.hair);
    }
    if person.long_hair {
        cv.rect(cx - hr * 0.9, hy, cx + hr * 0.9, y(0.26), |_, _| {
            person.hair
        });
    }
    // Occlusion: a block of clutter over part of the body.
    if r.random::<f32>() < 0.1 + 0.35 * d {
        let ow = w * (0.3 + 0.4 * r.random::<f32>());
        let oh = h * (0.15 + 0.25 * r.random::<f32>());
        let ox = w * r.random::<f32>() - ow / 2.0;
        let oy = h * (0.45 + 0.45 * r.random::<f32>()) - oh / 2.0;
        let oc = hsv(
            r.random(),
            0.3 * r.random::<f32>(),
            0.2 + 0.6 * r.random::<f32>(),
        );
        cv.rect(ox, oy, ox + ow, oy + oh, |_, _| oc);
    }
    cv.box_blur(cam.blur);
    // Camera response: cast, brightness, noise.
    let mut img = RgbImage::new(cfg.width, cfg.height);
    let light = cam.brightness * (1.0 + 0.15 * (r.random::<f32>() - 0.5));
    for (i, p) in img.pixels_mut().enumerate() {
        let c = cv.px[i];
        let mut out = [0u8; 3];
        for k in 0..3 {
            // cheap symmetric noise from two uniforms
            let n = (r.random::<f32>() + r.random::<f32>() - 1.0) * cam.noise * 1.7;
            out[k] = ((c[k] * cam.cast[k] * light + n).clamp(0.0, 1.0) * 255.0).round() as u8;
        }
        *p = Rgb(out);
    }
    img
}

/// One image to write.
struct Job {
    path: PathBuf,
    id: usize,
    cam: usize,
    index: usize,
}

/// Cameras an identity appears in: at least two, deterministic per identity.
fn cameras_of(cfg: &SynthConfig, domain: &Domain, id: usize) -> Vec<usize> {
    let mut r = stream(&[cfg.seed, domain.key, 0xCC, id as u64]);
    let mut cams: Vec<usize> = (0..cfg.cams).filter(|_| r.random::<f32>() < 0.7).collect();
    while cams.len() < 2 {
        let c = r.random_range(0..cfg.cams);
        if !cams.contains(&c) {
            cams.push(c);
        }
    }
    cams.sort_unstable();
    cams
}

/// Everyone rendered: the identities, the extra test identities, then one person per distractor.
fn people_count(cfg: &SynthConfig) -> usize {
    cfg.ids + cfg.extra_test_ids + cfg.distractors
}

fn plan(cfg: &SynthConfig, domain: &Domain, out: &Path) -> Vec<Job> {
    let mut jobs = Vec::new();
    let train_ids = cfg.ids / 2;
    for id in 0..cfg.ids + cfg.extra_test_ids {
        let extra = id >= cfg.ids;
        let cams = cameras_of(cfg, domain, id);
        // one query camera per test identity (plus a second when it has many cameras)
        let mut r = stream(&[cfg.seed, domain.key, 0x0E, id as u64]);
        let q1 = cams[r.random_range(0..cams.len())];
        let q2 = if cams.len() > 3 {
            Some(cams[r.random_range(0..cams.len())])
        } else {
            None
        };
        for &cam in &cams {
            for k in 0..cfg.per_cam {
                let index = cam * cfg.per_cam + k;
                let path = match cfg.layout {
                    SynthLayout::ImageFolder => {
                        out.join(format!("{id:05}")).join(format!("{index:04}.jpg"))
                    }
                    SynthLayout::Market => {
                        let pid = id + 1;
                        let name = format!("{pid:04}_c{}s1_{:06}_{k:02}.jpg", cam + 1, index * 25);
                        let split = if id < train_ids {
                            "bounding_box_train"
                        } else if k == 0 && (extra || cam == q1 || Some(cam) == q2) {
                            "query"
                        } else {
                            "bounding_box_test"
                        };
                        out.join(split).join(name)
                    }
                };
                jobs.push(Job {
                    path,
                    id,
                    cam,
                    index,
                });
            }
        }
    }
    // distractors: one image each, of someone no query shows, labelled 0000 as in Market-1501
    for j in 0..cfg.distractors {
        let id = cfg.ids + cfg.extra_test_ids + j;
        let mut r = stream(&[cfg.seed, domain.key, 0xD1, id as u64]);
        let cam = r.random_range(0..cfg.cams);
        let name = format!("0000_c{}s1_{:06}_00.jpg", cam + 1, j);
        jobs.push(Job {
            path: out.join("bounding_box_test").join(name),
            id,
            cam,
            index: j,
        });
    }
    jobs
}

/// Number of images [`generate`] will write.
pub fn planned_images(cfg: &SynthConfig) -> usize {
    let domain = Domain::new(&cfg.domain, cfg.seed, cfg.difficulty);
    (0..cfg.ids + cfg.extra_test_ids)
        .map(|id| cameras_of(cfg, &domain, id).len() * cfg.per_cam)
        .sum::<usize>()
        + cfg.distractors
}

/// What [`generate`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SynthSummary {
    pub images: usize,
    pub ids: usize,
}

/// Write the domain's images under `out` (created). JPEG quality 90.
pub fn generate(
    cfg: &SynthConfig,
    out: &Path,
    progress: impl Fn(usize) + Sync,
) -> Result<SynthSummary> {
    cfg.validate()?;
    let domain = Domain::new(&cfg.domain, cfg.seed, cfg.difficulty);
    let people: Vec<Identity> = (0..people_count(cfg))
        .map(|i| Identity::new(&domain, cfg.seed, i))
        .collect();
    let cams: Vec<Camera> = (0..cfg.cams)
        .map(|c| Camera::new(&domain, cfg.seed, c, cfg.difficulty))
        .collect();
    let jobs = plan(cfg, &domain, out);
    let mut dirs: Vec<&Path> = jobs.iter().filter_map(|j| j.path.parent()).collect();
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        std::fs::create_dir_all(d)
            .map_err(|e| DataError::file(d, format!("cannot create folder: {e}")))?;
    }
    jobs.par_iter().try_for_each(|job| -> Result<()> {
        let mut r = stream(&[
            cfg.seed,
            domain.key,
            0x1A,
            job.id as u64,
            job.cam as u64,
            job.index as u64,
        ]);
        let img = render(&people[job.id], &cams[job.cam], cfg, &mut r);
        let mut bytes = Vec::with_capacity(8 * 1024);
        JpegEncoder::new_with_quality(&mut bytes, 90)
            .encode_image(&img)
            .map_err(|e| DataError::file(&job.path, format!("cannot encode JPEG: {e}")))?;
        // temp + rename: an interrupted run never leaves a half-written image
        let tmp = job.path.with_extension("jpg.tmp");
        std::fs::write(&tmp, &bytes)
            .and_then(|_| std::fs::rename(&tmp, &job.path))
            .map_err(|e| DataError::file(&job.path, format!("cannot write: {e}")))?;
        progress(1);
        Ok(())
    })?;
    Ok(SynthSummary {
        images: jobs.len(),
        ids: cfg.ids,
    })
}

/// A picture of the domain: one row per identity, one column per camera (first image of each).
pub fn sample_grid(cfg: &SynthConfig, rows: usize) -> Result<RgbImage> {
    cfg.validate()?;
    let domain = Domain::new(&cfg.domain, cfg.seed, cfg.difficulty);
    let cams: Vec<Camera> = (0..cfg.cams)
        .map(|c| Camera::new(&domain, cfg.seed, c, cfg.difficulty))
        .collect();
    let (w, h) = (cfg.width, cfg.height);
    let mut grid = RgbImage::from_pixel(
        w * cfg.cams as u32 + cfg.cams as u32 - 1,
        h * rows as u32 + rows as u32 - 1,
        Rgb([255, 255, 255]),
    );
    for id in 0..rows.min(cfg.ids) {
        let person = Identity::new(&domain, cfg.seed, id);
        for (c, cam) in cams.iter().enumerate() {
            let mut r = stream(&[
                cfg.seed,
                domain.key,
                0x1A,
                id as u64,
                c as u64,
                (c * cfg.per_cam) as u64,
            ]);
            let img = render(&person, cam, cfg, &mut r);
            image::imageops::replace(
                &mut grid,
                &img,
                (c as u32 * (w + 1)) as i64,
                (id as u32 * (h + 1)) as i64,
            );
        }
    }
    Ok(grid)
}
