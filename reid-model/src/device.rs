//! `cpu` / `cuda` / `cuda:N` → candle device, with an error that says how to get CUDA.

use candle_core::Device;

use crate::error::{ModelError, Result};

pub fn parse_device(s: &str) -> Result<Device> {
    let s = s.trim();
    if s == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = s
        .strip_prefix("cuda:")
        .or_else(|| (s == "cuda").then_some("0"))
        .and_then(|o| o.parse::<usize>().ok())
        .ok_or_else(|| ModelError::Input(format!("device '{s}': expected cpu, cuda or cuda:N")))?;
    Device::new_cuda(ordinal).map_err(|e| {
        ModelError::Input(format!(
            "device '{s}': CUDA is not available ({e}); build with `--features cuda` on a machine with an NVIDIA GPU, or use --device cpu"
        ))
    })
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
