//! `cpu` / `cuda` / `cuda:N` → candle device, with an error that says how to get CUDA.

use candle_core::Device;

use crate::error::{ModelError, Result};

pub fn parse_device(s: &str) -> Result<Device> {
    open_device(
        s.parse::<reid_run::DeviceSpec>()
            .map_err(ModelError::Input)?,
    )
}

/// The candle device of a typed device (a config's `device`).
pub fn open_device(spec: reid_run::DeviceSpec) -> Result<Device> {
    let ordinal = match spec {
        reid_run::DeviceSpec::Cpu => return Ok(Device::Cpu),
        reid_run::DeviceSpec::Cuda(n) => n,
    };
    let s = spec.to_string();
    // what to do differs: a CPU-only build needs rebuilding, a CUDA build needs a driver and GPU
    let fix = if cfg!(feature = "cuda") {
        "this build has CUDA: check the NVIDIA driver (nvidia-smi), the GPU's ordinal and \
         CUDA_VISIBLE_DEVICES, or use --device cpu"
    } else {
        "build with `--features cuda` (scripts/cuda-build.sh) on a machine with an NVIDIA GPU, \
         or use --device cpu"
    };
    Device::new_cuda(ordinal)
        .map_err(|e| ModelError::Input(format!("device '{s}': CUDA is not available ({e}); {fix}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_garbage() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device("gpu0")
            .unwrap_err()
            .to_string()
            .contains("expected cpu"));
    }
}
