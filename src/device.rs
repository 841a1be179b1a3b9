//! Device selection: `cpu`, `cuda`, `cuda:N` or `auto`.

use tch::Device;

use crate::error::{Error, Result};

/// Parses a device name. `auto` picks the first GPU when libtorch sees one, else the CPU; asking
/// for a GPU that is not there is an error rather than a silent fallback.
///
/// ```
/// use span_marker::device::parse_device;
/// assert_eq!(parse_device("cpu")?, tch::Device::Cpu);
/// assert!(parse_device("tpu").is_err());
/// # Ok::<(), span_marker::Error>(())
/// ```
pub fn parse_device(name: &str) -> Result<Device> {
    let name = name.trim().to_ascii_lowercase();
    let cuda = |index: usize| {
        let available = tch::Cuda::device_count().max(0) as usize;
        if index < available {
            Ok(Device::Cuda(index))
        } else if available == 0 {
            Err(Error::Device(format!(
                "`{name}` was requested but libtorch sees no CUDA device (CPU-only build, no GPU, or no driver)"
            )))
        } else {
            Err(Error::Device(format!(
                "`{name}` was requested but only {available} CUDA device(s) are visible"
            )))
        }
    };
    match name.as_str() {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(Device::cuda_if_available()),
        "cuda" | "gpu" => cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(index)) => cuda(index),
            _ => Err(Error::Device(format!(
                "unknown device {other:?}: use `cpu`, `cuda`, `cuda:N` or `auto`"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_is_refused_when_absent_and_names_are_checked() {
        assert_eq!(parse_device(" CPU ").unwrap(), Device::Cpu);
        assert!(parse_device("cuda:x").is_err());
        let beyond = format!("cuda:{}", tch::Cuda::device_count());
        let err = parse_device(&beyond).unwrap_err().to_string();
        assert!(err.contains(&beyond), "{err}");
        if !tch::Cuda::is_available() {
            assert!(parse_device("cuda").is_err());
            assert_eq!(parse_device("auto").unwrap(), Device::Cpu);
        }
    }
}
