//! The machine and process: device names, CPU model, memory, and the median of runs.

use std::process::Command;

use tch::Device;

/// The name of `device` for training arguments and for Python.
pub(crate) fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(index) => format!("cuda:{index}"),
        _ => "cpu".into(),
    }
}

/// The GPU's name, from `nvidia-smi`, when running on CUDA.
pub(crate) fn gpu_name(device: Device) -> Option<String> {
    let Device::Cuda(index) = device else {
        return None;
    };
    let output = Command::new("nvidia-smi")
        .args([
            "--query-gpu=name",
            "--format=csv,noheader",
            "-i",
            &index.to_string(),
        ])
        .output()
        .ok()?;
    let name = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (!name.is_empty()).then_some(name)
}

/// The median of `values` (the mean of the middle two for an even count); sorts them.
pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let half = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[half - 1] + values[half]) / 2.0
    } else {
        values[half]
    }
}

pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Peak resident memory of this process (Linux `VmHWM`).
pub(crate) fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// One line placing a run's model FLOP rate under the machine's measured matmul peak.
pub(crate) fn roofline(flops_per_pass: f64, seconds_per_pass: f64, peak_gflops: f64) -> String {
    let rate = flops_per_pass / seconds_per_pass / 1e9;
    format!(
        "roofline: {:.1} GFLOP of model FLOPs per pass (text and marker tokens as run) at {rate:.1} GFLOP/s = {:.0}% of the float32 matmul peak measured in this run ({peak_gflops:.0} GFLOP/s)",
        flops_per_pass / 1e9,
        100.0 * rate / peak_gflops
    )
}
