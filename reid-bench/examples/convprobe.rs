use candle_core::{Device, Tensor, Var};
use reid_model::complexity::complexity;
use reid_model::kernels::{conv2d, Kernels};
use reid_model::{ArchSpec, Neck};
use std::time::Instant;
reid_process::use_fast_allocator!();
fn main() -> anyhow::Result<()> {
    reid_process::alloc::configure();
    let dev = Device::Cpu;
    let spec = ArchSpec::resnet_with(18, 0, 1.0, 1, Neck::None)?;
    let n = 32;
    let c = complexity(&spec, 128, 64)?;
    let (mut tf, mut tb) = (0.0, 0.0);
    let mut seen = std::collections::HashSet::new();
    for l in c.layers.iter() {
        let (h, w) = (l.out_hw[0] * l.stride, l.out_hw[1] * l.stride);
        let key = (l.in_channels, l.out_channels, l.kernel, l.stride, h, w);
        if !seen.insert(key) {
            continue;
        }
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (n, l.in_channels, h, w), &dev)?)?;
        let wt = Var::from_tensor(&Tensor::randn(
            0f32,
            0.1,
            (l.out_channels, l.in_channels, l.kernel, l.kernel),
            &dev,
        )?)?;
        let r = Tensor::randn(
            0f32,
            1.,
            (n, l.out_channels, l.out_hw[0], l.out_hw[1]),
            &dev,
        )?;
        let _ = (conv2d(
            Kernels::Native,
            x.as_tensor(),
            wt.as_tensor(),
            l.stride,
            l.padding,
        )? * &r)?
            .sum_all()?
            .backward()?;
        let t = Instant::now();
        let y = conv2d(
            Kernels::Native,
            x.as_tensor(),
            wt.as_tensor(),
            l.stride,
            l.padding,
        )?;
        let t1 = t.elapsed().as_secs_f64();
        let loss = (y * &r)?.sum_all()?;
        let t = Instant::now();
        let _g = loss.backward()?;
        let t2 = t.elapsed().as_secs_f64();
        let gf = 2.0 * l.macs as f64 * n as f64 / 1e9;
        tf += t1;
        tb += t2;
        println!(
            "{:<22} {:?} fwd {:>6.1} ms {:>6.1} GF/s  bwd {:>6.1} ms {:>6.1} GF/s",
            l.name,
            key,
            t1 * 1e3,
            gf / t1,
            t2 * 1e3,
            2.0 * gf / t2
        );
    }
    println!("unique-shape totals fwd {tf:.3} bwd {tb:.3}");
    Ok(())
}
