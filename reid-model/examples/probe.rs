use candle_core::{Device, Tensor};
use reid_model::{ArchSpec, Neck, ReidNet};
use std::time::Instant;
reid_model::use_fast_allocator!();
fn main() -> anyhow::Result<()> {
    reid_model::alloc::configure();
    let dev = Device::Cpu;
    let spec = ArchSpec::resnet_with(18, 751, 1.0, 1, Neck::BnNeck)?;
    let net = ReidNet::new(&spec, &dev, 0)?;
    let params = net.named_parameters();
    let x = Tensor::randn(0f32, 1., (32, 3, 128, 64), &dev)?;
    let labels = Tensor::from_vec(
        (0..32u32).map(|i| i * 23 % 751).collect::<Vec<_>>(),
        32,
        &dev,
    )?;
    for _ in 0..4 {
        let t0 = Instant::now();
        let out = net.forward_t(&x, true)?;
        let loss = candle_nn::loss::cross_entropy(&out.logits.unwrap(), &labels)?;
        let t1 = Instant::now();
        let grads = loss.backward()?;
        let t2 = Instant::now();
        for (_, v) in &params {
            if let Some(g) = grads.get(v.as_tensor()) {
                v.set(&(v.as_tensor() - (g * 0.01)?)?)?;
            }
        }
        let t3 = Instant::now();
        println!(
            "fwd {:.3} bwd {:.3} step {:.3}",
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            (t3 - t2).as_secs_f64()
        );
    }
    Ok(())
}
