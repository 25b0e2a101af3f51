//! Helpers shared by the grid tests: tiny synthetic domains, bit-exact weight comparison.

use std::path::Path;

use reid_data::synth::{generate, SynthConfig, SynthLayout};

/// A tiny synthetic domain (12 identities, 3 cameras, 64×32) in `dir`.
#[allow(dead_code)] // each test binary includes this module and uses part of it
pub fn synth(dir: &Path, domain: &str, layout: SynthLayout) {
    let cfg = SynthConfig {
        domain: domain.into(),
        ids: 12,
        cams: 3,
        per_cam: 3,
        seed: 2,
        height: 64,
        width: 32,
        difficulty: 0.5,
        layout,
    };
    generate(&cfg, dir, |_| {}).unwrap();
}

/// Every tensor of two safetensors files equal bit for bit (`what` names the comparison).
#[allow(dead_code)]
pub fn assert_same_weights(a: &Path, b: &Path, what: &str) {
    let dev = candle_core::Device::Cpu;
    let wa = reid_model::checkpoint::read_safetensors(a, &dev).unwrap();
    let wb = reid_model::checkpoint::read_safetensors(b, &dev).unwrap();
    assert_eq!(wa.tensors.len(), wb.tensors.len(), "{what}: tensor count");
    for (k, ta) in &wa.tensors {
        if ta.dtype() != candle_core::DType::F32 {
            continue;
        }
        let x: Vec<f32> = ta.flatten_all().unwrap().to_vec1().unwrap();
        let y: Vec<f32> = wb.tensors[k].flatten_all().unwrap().to_vec1().unwrap();
        assert!(
            x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{what}: {k} differs"
        );
    }
}
