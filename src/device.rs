//! Device selection (`cpu`, `cuda`, `cuda:N` or `auto`), the precision of forward passes, and
//! process settings for fast CPU work.

use std::fmt;
use std::str::FromStr;

use tch::Device;

use crate::error::{Error, Result};
use crate::ffi;

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

/// The precision of forward passes. Weights stay float32; the mixed precisions run matrix
/// products and attention in 16 bits under autocast (as `torch.autocast`), with reductions,
/// softmax and layer norms in float32: `bf16` and `fp16` on a CUDA device, `bf16` also for
/// training on a CPU with bfloat16 instructions. (CUDA's autocast keeps softmax and layer norms
/// in float32 by rule; the CPU's does not, and they stay float32 there because the residual
/// stream and the attention bias are float32 and type promotion carries that through.) CPU
/// inference in `bf16` runs the encoder's layers on bfloat16 copies of their linear maps, with
/// bfloat16 activations between them (products accumulate and layer norms compute in float32;
/// attention computes in float32; the head reads float32 states). `int8` runs the encoder's
/// linear maps on int8 copies of their weights on the CPU (inference only).
///
/// ```
/// use span_marker::device::{cpu_has_bf16, Precision};
/// assert_eq!("bf16".parse::<Precision>()?, Precision::BFloat16);
/// assert_eq!(Precision::BFloat16.check(tch::Device::Cpu).is_ok(), cpu_has_bf16());
/// assert!(Precision::Float16.check(tch::Device::Cpu).is_err());
/// assert!(Precision::Int8.check(tch::Device::Cuda(0)).is_err());
/// assert!(Precision::Float32.check(tch::Device::Cpu).is_ok());
/// # Ok::<(), span_marker::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Float32,
    /// bfloat16 (`bf16`): float32's range, so no loss scaling is needed.
    BFloat16,
    /// float16 autocast (`fp16`, CUDA only).
    Float16,
    /// Dynamic int8 quantisation of the encoder's linear maps (`int8`, CPU inference only):
    /// int8 weights with a scale per output channel, activations quantised per call (see
    /// `model::quantized`).
    Int8,
}

/// Whether this CPU has bfloat16 instructions: AVX512-BF16 on x86 (which every CPU with AMX
/// has too) or BF16 on Arm. libtorch runs bfloat16 matrix products without them only by
/// conversion, so `bf16` is refused there.
pub fn cpu_has_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("bf16")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// Whether the CPU's vendor is Intel (x86 `cpuid` leaf 0).
fn cpu_is_intel() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `cpuid` leaf 0 exists on every x86-64 CPU (the call is safe on newer Rust).
        #[allow(unused_unsafe)]
        let id = unsafe { std::arch::x86_64::__cpuid(0) };
        [id.ebx, id.edx, id.ecx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .eq(*b"GenuineIntel")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU has AMX tiles the process may use. Without them a bfloat16 matrix product
/// runs on AVX512-BF16's dot products, which on the Intel Xeon measured (`docs/benchmarks.md`)
/// is slower than float32 (on the AMD EPYC measured, 2-3x faster); with them, oneDNN runs it on
/// the tiles.
pub fn cpu_has_amx() -> bool {
    ffi::cpu_has_amx()
}

impl Precision {
    /// `fp16` needs a CUDA device, `bf16` a CUDA device or a CPU with bfloat16 instructions
    /// ([`cpu_has_bf16`]), `int8` a CPU with fbgemm's instructions (AVX2); float32 runs
    /// anywhere.
    pub fn check(self, device: Device) -> Result<()> {
        match self {
            Self::Float32 => Ok(()),
            Self::BFloat16 if !device.is_cuda() && !cpu_has_bf16() => Err(Error::Device(
                "`bf16` on the CPU needs bfloat16 instructions (AVX512-BF16 or AMX on x86, BF16 on Arm), which this CPU lacks: use `fp32`, or `int8` for quantised CPU inference".into(),
            )),
            Self::BFloat16 => {
                // Measured slower on an Intel Xeon without AMX, faster on an AMD EPYC
                // (docs/benchmarks.md); asked once per process.
                if !device.is_cuda() {
                    static WARNED: std::sync::Once = std::sync::Once::new();
                    WARNED.call_once(|| {
                        if cpu_is_intel() && !cpu_has_amx() {
                            tracing::warn!(
                                "`bf16` on an Intel CPU without AMX: libtorch's bfloat16 matrix products run slower than float32 there; `int8` is the fast CPU precision for inference"
                            )
                        }
                    });
                }
                Ok(())
            }
            Self::Float16 if !device.is_cuda() => Err(Error::Device(
                "`fp16` needs a CUDA device (on the CPU use `fp32`, `bf16` where the CPU has bfloat16 instructions, or `int8` for quantised inference)".into(),
            )),
            Self::Float16 => Ok(()),
            Self::Int8 if device.is_cuda() => Err(Error::Device(
                "`int8` runs on the CPU only (use `bf16` or `fp16` on a CUDA device)".into(),
            )),
            Self::Int8 if !ffi::int8_supported() => Err(Error::Device(
                "`int8` needs a CPU with AVX2 and a libtorch with the fbgemm quantisation engine; this one has neither (use `fp32`)".into(),
            )),
            Self::Int8 => Ok(()),
        }
    }

    /// Runs `f` under autocast on `device` with this precision's 16-bit type (plainly for
    /// float32 and int8, whose quantised layers are chosen by the caller). Autocast state is
    /// per thread, so it is set on the thread that runs `f`.
    pub fn autocast<T>(self, device: Device, f: impl FnOnce() -> T) -> Result<T> {
        let bf16 = match self {
            Self::Float32 | Self::Int8 => return Ok(f()),
            Self::BFloat16 => true,
            Self::Float16 => false,
        };
        if !device.is_cuda() {
            if !bf16 {
                return Err(Error::Device("`fp16` autocast needs a CUDA device".into()));
            }
            let _autocast = CpuAutocast::enter()?;
            return Ok(f());
        }
        if !ffi::set_cuda_autocast_bf16(bf16) {
            return Err(Error::Device(format!(
                "libtorch refused the CUDA autocast type for `{self}`"
            )));
        }
        Ok(tch::autocast(true, f))
    }
}

/// bfloat16 CPU autocast on the calling thread while this lives (left on drop, also when the
/// work inside panics).
struct CpuAutocast {
    was_enabled: bool,
}

impl CpuAutocast {
    fn enter() -> Result<Self> {
        let was_enabled = ffi::cpu_autocast_enter()
            .ok_or_else(|| Error::Device("libtorch refused CPU bfloat16 autocast".into()))?;
        Ok(Self { was_enabled })
    }
}

impl Drop for CpuAutocast {
    fn drop(&mut self) {
        ffi::cpu_autocast_exit(self.was_enabled);
    }
}

impl FromStr for Precision {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "fp32" | "float32" | "f32" => Ok(Self::Float32),
            "bf16" | "bfloat16" => Ok(Self::BFloat16),
            "fp16" | "float16" | "f16" | "half" => Ok(Self::Float16),
            "int8" | "qint8" => Ok(Self::Int8),
            other => Err(Error::Config(format!(
                "unknown precision {other:?}: use `fp32`, `bf16`, `fp16` or `int8`"
            ))),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Float32 => "fp32",
            Self::BFloat16 => "bf16",
            Self::Float16 => "fp16",
            Self::Int8 => "int8",
        })
    }
}

/// As its name (`fp32`, `bf16`, `fp16`, `int8`), which is what settings give.
impl serde::Serialize for Precision {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// From any name that [`FromStr`] reads; an unknown one is an error listing the precisions.
impl<'de> serde::Deserialize<'de> for Precision {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(|e| match e {
            Error::Config(message) => serde::de::Error::custom(message),
            other => serde::de::Error::custom(other),
        })
    }
}

/// Keeps freed tensor memory in the process instead of handing it back to the system after
/// every step; call it once at start-up, before any model work. Returns whether the allocator
/// was tuned (only glibc's is; elsewhere this does nothing).
///
/// glibc serves each allocation above its mmap threshold (dynamic, 128 KiB to 32 MiB) with a
/// fresh mapping and unmaps it on free, and trims the heap top whenever 128 KiB is free there.
/// A training or inference step allocates and frees the same large activations over and over,
/// so every step pays for zeroed pages again: on a 2-core CPU the page faults of a small
/// encoder's training step took about a sixth of its time, and MiniLM's inference batches
/// (feed-forward activations of 40-50 MiB) faulted in 4 GB of zeroed pages per 500 sentences.
/// Here glibc serves every allocation from its heaps (no mappings of their own; a thread's
/// heap still falls back to one for a block over 64 MiB) and trims a heap only when 1 GiB is
/// free at its top. Setting only the trim threshold is worse than neither (glibc then keeps
/// serving mid-size blocks with fresh mappings), so both are set together. The price is memory
/// kept for reuse: the process holds about its high-water mark of heap memory (glibc returns
/// only free space at the top of the main heap, past 1 GiB, and never shrinks a thread's
/// heap), so a long-lived process that once ran a large batch keeps that memory.
///
/// ```
/// let tuned = span_marker::device::tune_host_allocator();
/// assert_eq!(tuned, cfg!(all(target_os = "linux", target_env = "gnu")));
/// ```
pub fn tune_host_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const TRIM_THRESHOLD: libc::c_int = 1 << 30;
        // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// The machine's float32 matrix-multiply rate as libtorch reaches it in this process, in
/// GFLOP/s: the best of square products (1024 to 4096 on the CPU, up to 8192 on a GPU), each
/// repeated for at least a quarter of a second after a warm-up, through libtorch's `matmul`
/// and, on the CPU, its oneDNN products too (faster than MKL's on some CPUs; the fused maps of
/// CPU inference run on them). Benchmarks divide model FLOP rates by it (a roofline). Run it
/// on the thread that runs the model (see the crate docs on threads); it takes a few seconds.
pub fn matmul_peak_gflops(device: Device) -> Result<f64> {
    use tch::{Kind, Tensor};
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
    let onednn = device == Device::Cpu && ffi::fused_supported();
    let mut best = 0f64;
    for &n in sizes {
        let a = Tensor::randn([n, n], (Kind::Float, device));
        let b = Tensor::randn([n, n], (Kind::Float, device));
        let matmul = || Ok(a.matmul(&b));
        let fused = || ffi::fused_linear(&a, &b, None, ffi::PostOp::None);
        let products: [&dyn Fn() -> Result<Tensor>; 2] = [&matmul, &fused];
        for product in &products[..if onednn { 2 } else { 1 }] {
            let _ = product()?;
            sync();
            let (mut reps, start) = (0u32, std::time::Instant::now());
            while reps < 2 || start.elapsed().as_secs_f64() < 0.25 {
                let _ = product()?;
                sync();
                reps += 1;
            }
            let flops = 2.0 * (n as f64).powi(3) * f64::from(reps);
            best = best.max(flops / start.elapsed().as_secs_f64() / 1e9);
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_vendor_agrees_with_the_kernel() {
        let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo") else {
            eprintln!("skipped: no /proc/cpuinfo");
            return;
        };
        let vendor = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("vendor_id"))
            .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim());
        if let Some(vendor) = vendor {
            assert_eq!(cpu_is_intel(), vendor == "GenuineIntel", "{vendor}");
        }
    }

    #[test]
    fn precisions_parse_print_and_check_the_device() {
        for precision in [
            Precision::Float32,
            Precision::BFloat16,
            Precision::Float16,
            Precision::Int8,
        ] {
            assert_eq!(
                precision.to_string().parse::<Precision>().unwrap(),
                precision
            );
        }
        assert_eq!(" Half ".parse::<Precision>().unwrap(), Precision::Float16);
        let err = "int4".parse::<Precision>().unwrap_err().to_string();
        assert!(err.contains("int4") && err.contains("int8"), "{err}");
        let err = Precision::Float16
            .check(Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("fp16") && err.contains("CUDA"), "{err}");
        match Precision::BFloat16.check(Device::Cpu) {
            Ok(()) => assert!(cpu_has_bf16()),
            Err(err) => {
                let err = err.to_string();
                assert!(!cpu_has_bf16());
                assert!(err.contains("bf16") && err.contains("AVX512-BF16"), "{err}");
            }
        }
        assert!(Precision::BFloat16.check(Device::Cuda(0)).is_ok());
        let err = Precision::Int8
            .check(Device::Cuda(0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("int8") && err.contains("CPU"), "{err}");
        // The machines this runs on have AVX2 and libtorch's fbgemm engine.
        assert!(Precision::Int8.check(Device::Cpu).is_ok());
    }

    #[test]
    fn autocast_runs_products_in_bfloat16_on_the_cpu_and_ends_with_its_closure() {
        let a = tch::Tensor::ones([4, 4], (tch::Kind::Float, Device::Cpu));
        let product = Precision::BFloat16
            .autocast(Device::Cpu, || a.matmul(&a))
            .unwrap();
        assert_eq!(product.kind(), tch::Kind::BFloat16);
        assert_eq!(a.matmul(&a).kind(), tch::Kind::Float, "autocast left on");
        // Nested: the inner exit keeps the outer autocast on.
        let (inner, after) = Precision::BFloat16
            .autocast(Device::Cpu, || {
                let inner = Precision::BFloat16
                    .autocast(Device::Cpu, || a.matmul(&a).kind())
                    .unwrap();
                (inner, a.matmul(&a).kind())
            })
            .unwrap();
        assert_eq!((inner, after), (tch::Kind::BFloat16, tch::Kind::BFloat16));
        // Work that panics inside still leaves autocast.
        let panicked = std::panic::catch_unwind(|| {
            Precision::BFloat16.autocast(Device::Cpu, || panic!("inside autocast"))
        });
        assert!(panicked.is_err());
        assert_eq!(a.matmul(&a).kind(), tch::Kind::Float, "autocast left on");
        assert!(Precision::Float16.autocast(Device::Cpu, || ()).is_err());
    }

    #[test]
    fn the_autocast_shim_is_linked_and_float32_runs_plainly() {
        // Choosing the CUDA autocast type works without a GPU; float32 never enters autocast.
        assert_eq!(
            Precision::BFloat16.autocast(Device::Cuda(0), || 1).unwrap(),
            1
        );
        assert_eq!(
            Precision::Float16.autocast(Device::Cuda(0), || 2).unwrap(),
            2
        );
        assert_eq!(Precision::Float32.autocast(Device::Cpu, || 3).unwrap(), 3);
    }

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
