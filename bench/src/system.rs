//! The machine and process: device names, CPU model, memory, and the median of runs.

use std::process::Command;
use std::time::Instant;

use span_marker::model::fused::{self, PostOp};
use tch::{Device, Kind, Tensor};

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

/// The machine's float32 matrix-multiply rate as libtorch reaches it in this process, in
/// GFLOP/s: the best of square products (1024 to 4096 on the CPU, up to 8192 on a GPU), each
/// repeated for at least a quarter of a second after a warm-up, through libtorch's `matmul`
/// and, on the CPU, its oneDNN products too (faster than MKL's on some CPUs; the fused maps
/// of CPU inference run on them). The roofline of the runs.
pub(crate) fn matmul_peak_gflops(device: Device) -> f64 {
    let _no_grad = tch::no_grad_guard();
    let sync = || {
        if let Device::Cuda(index) = device {
            tch::Cuda::synchronize(index as i64);
        }
    };
    let sizes: &[i64] = if device.is_cuda() {
        &[2048, 4096, 8192]
    } else {
        &[1024, 2048, 4096]
    };
    let mut best = 0f64;
    for &n in sizes {
        let a = Tensor::randn([n, n], (Kind::Float, device));
        let b = Tensor::randn([n, n], (Kind::Float, device));
        let onednn = device == Device::Cpu && fused::supported();
        let products: [&dyn Fn() -> Tensor; 2] = [&|| a.matmul(&b), &|| {
            fused::linear(&a, &b, None, PostOp::None)
        }];
        for product in &products[..if onednn { 2 } else { 1 }] {
            let _ = product();
            sync();
            let (mut reps, start) = (0u32, Instant::now());
            while reps < 2 || start.elapsed().as_secs_f64() < 0.25 {
                let _ = product();
                sync();
                reps += 1;
            }
            let flops = 2.0 * (n as f64).powi(3) * f64::from(reps);
            best = best.max(flops / start.elapsed().as_secs_f64() / 1e9);
        }
    }
    best
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
