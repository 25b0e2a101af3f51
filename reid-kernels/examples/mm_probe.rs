//! Probe: the gemm crate's f32 GFLOP/s at the conv shapes of a ResNet-18 step (row-major output, as
//! `conv_gemm` calls it), one and two threads: `cargo run --release -p reid-kernels --example mm_probe`.
//! BENCHMARKS.md sets them beside MKL's (PyTorch) on the same shapes.
fn main() {
    // (m, n, k, label): row-major dst [m×n] = lhs [m×k] × rhs [k×n], one thread
    let shapes = [
        (64usize, 512usize, 576usize, "fwd l1 3x3 one image"),
        (64, 4096, 576, "fwd l1 3x3 8 images"),
        (128, 512, 1152, "fwd l2 3x3 4 images"),
        (256, 256, 2304, "fwd l3 3x3 8 images"),
        (512, 256, 4608, "fwd l4 3x3 32 images"),
        (64, 576, 512, "wgrad l1 one image"),
        (512, 4608, 256, "wgrad l4"),
    ];
    for &(m, n, k, label) in &shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut c = vec![0f32; m * n];
        let run = |c: &mut [f32], par| unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                k as isize,
                b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            )
        };
        for par in [gemm::Parallelism::None, gemm::Parallelism::Rayon(2)] {
            for _ in 0..3 {
                run(&mut c, par);
            }
            let it = 20;
            let t = std::time::Instant::now();
            for _ in 0..it {
                run(&mut c, par);
            }
            let dt = t.elapsed().as_secs_f64() / it as f64;
            let p = matches!(par, gemm::Parallelism::None);
            println!(
                "{m}x{n}x{k} {label} {}: {:.1} GFLOP/s",
                if p { "1T" } else { "2T" },
                2.0 * (m * n * k) as f64 / dt / 1e9
            );
        }
    }
}
