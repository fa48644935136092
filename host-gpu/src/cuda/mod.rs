//! The CUDA backend: the same engine on NVIDIA GPUs, always compiled and
//! chosen at run time.
//!
//! sovra links nothing from CUDA at build time (cudarc with dynamic loading
//! and a fixed CUDA version), so every machine builds it. At start-up
//! [`probe`] looks for the driver, cuBLAS and NVRTC libraries *before*
//! touching them (cudarc panics on a missing library) and lists the devices;
//! [`DeviceChoice::resolve`] turns `auto`, `cpu` or `cuda[:N]` into a device
//! or a clear error. The kernels ([`kernels`]) are CUDA C in
//! `host-gpu/kernels/`, compiled by NVRTC for the device's architecture;
//! [`CudaBackend`] runs the llama forward pass with them and cuBLAS, from
//! weights uploaded once ([`weights`]), a block pool kept on the device and
//! booked on the host ([`cache`]), and CUDA graphs for decode steps
//! ([`graphs`]).

mod backend;
mod cache;
mod gpu;
mod graphs;
pub mod kernels;
mod weights;

use std::fmt;
use std::str::FromStr;

pub use backend::{CudaBackend, CudaLoadError, GpuBackend};
pub use cache::CudaCache;
pub use gpu::{Buffer, CudaGpu, Element, Gpu, GpuError, Karg};
pub use graphs::{DECODE_BATCHES, GRAPHS_VARIABLE};
pub use kernels::Half;

/// Where a model runs, as operators write it: `auto`, `cpu`, `cuda`,
/// `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The first CUDA device when one is usable, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| format!("`{text}` is not a device; use auto, cpu, cuda or cuda:N")),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// A CUDA device as the probe saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaDevice {
    pub ordinal: usize,
    pub name: String,
    /// Compute capability (9, 0 on Hopper).
    pub capability: (i32, i32),
    pub memory_bytes: usize,
}

/// What CUDA this machine has.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CudaProbe {
    pub driver: bool,
    pub cublas: bool,
    pub nvrtc: bool,
    pub devices: Vec<CudaDevice>,
    /// Why no device is usable, when none is.
    pub problem: Option<String>,
}

impl CudaProbe {
    /// Whether `ordinal` can run models.
    pub fn usable(&self, ordinal: usize) -> bool {
        self.driver
            && self.cublas
            && self.nvrtc
            && self.devices.iter().any(|d| d.ordinal == ordinal)
    }
}

/// Looks for CUDA without ever letting cudarc panic: each library is
/// checked for before the first call into it.
pub fn probe() -> CudaProbe {
    // SAFETY: these only try to open the shared libraries by name.
    let driver = unsafe { cudarc::driver::sys::is_culib_present() };
    let cublas = unsafe { cudarc::cublas::sys::is_culib_present() };
    let nvrtc = unsafe { cudarc::nvrtc::sys::is_culib_present() };
    let mut probe = CudaProbe {
        driver,
        cublas,
        nvrtc,
        ..CudaProbe::default()
    };
    if !driver {
        probe.problem = Some("no NVIDIA driver (libcuda.so was not found)".into());
        return probe;
    }
    let count = match cudarc::driver::CudaContext::device_count() {
        Ok(count) => count.max(0) as usize,
        Err(e) => {
            probe.problem = Some(format!("the NVIDIA driver did not start: {e}"));
            return probe;
        }
    };
    for ordinal in 0..count {
        let Ok(context) = cudarc::driver::CudaContext::new(ordinal) else {
            continue;
        };
        probe.devices.push(CudaDevice {
            ordinal,
            name: context.name().unwrap_or_else(|_| "unknown".into()),
            capability: context.compute_capability().unwrap_or((0, 0)),
            memory_bytes: context.total_mem().unwrap_or(0),
        });
    }
    probe.problem = if probe.devices.is_empty() {
        Some("the NVIDIA driver reports no device".into())
    } else if !cublas {
        Some("cuBLAS (libcublas.so) was not found".into())
    } else if !nvrtc {
        Some("NVRTC (libnvrtc.so) was not found".into())
    } else {
        None
    };
    probe
}

/// The device a model will run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// `cuda` was asked for and cannot be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot use {choice}: {reason}")]
pub struct DeviceUnavailable {
    pub choice: DeviceChoice,
    pub reason: String,
}

impl DeviceChoice {
    /// The device this choice means on a machine that probed as `probe`.
    /// `auto` falls back to the CPU (saying why in the returned note);
    /// an explicit `cuda` that cannot be had is an error.
    pub fn resolve(self, probe: &CudaProbe) -> Result<(Device, Option<String>), DeviceUnavailable> {
        match self {
            DeviceChoice::Cpu => Ok((Device::Cpu, None)),
            DeviceChoice::Auto if probe.usable(0) => Ok((Device::Cuda(0), None)),
            DeviceChoice::Auto => Ok((
                Device::Cpu,
                Some(format!(
                    "no usable CUDA device ({}); running on the CPU",
                    probe.problem.as_deref().unwrap_or("unknown reason")
                )),
            )),
            DeviceChoice::Cuda(n) if probe.usable(n) => Ok((Device::Cuda(n), None)),
            DeviceChoice::Cuda(_) => Err(DeviceUnavailable {
                choice: self,
                reason: match &probe.problem {
                    Some(problem) => problem.clone(),
                    None => format!("this machine has {} CUDA devices", probe.devices.len()),
                },
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_choices_parse_and_print() {
        for text in ["auto", "cpu", "cuda:0", "cuda:3"] {
            assert_eq!(text.parse::<DeviceChoice>().unwrap().to_string(), text);
        }
        assert_eq!("cuda".parse::<DeviceChoice>(), Ok(DeviceChoice::Cuda(0)));
        for bad in ["gpu", "cuda:", "cuda:x", "CUDA"] {
            assert!(bad.parse::<DeviceChoice>().unwrap_err().contains(bad));
        }
    }

    #[test]
    fn choices_resolve_against_what_the_probe_found() {
        let none = CudaProbe {
            problem: Some("no NVIDIA driver (libcuda.so was not found)".into()),
            ..CudaProbe::default()
        };
        assert_eq!(DeviceChoice::Cpu.resolve(&none).unwrap().0, Device::Cpu);
        let (device, note) = DeviceChoice::Auto.resolve(&none).unwrap();
        assert_eq!(device, Device::Cpu);
        assert!(note.unwrap().contains("libcuda"));
        let error = DeviceChoice::Cuda(0).resolve(&none).unwrap_err();
        assert!(error.to_string().contains("cuda:0") && error.to_string().contains("libcuda"));

        let h200 = CudaProbe {
            driver: true,
            cublas: true,
            nvrtc: true,
            devices: vec![CudaDevice {
                ordinal: 0,
                name: "NVIDIA H200".into(),
                capability: (9, 0),
                memory_bytes: 141 << 30,
            }],
            problem: None,
        };
        assert_eq!(
            DeviceChoice::Auto.resolve(&h200).unwrap().0,
            Device::Cuda(0)
        );
        assert_eq!(
            DeviceChoice::Cuda(0).resolve(&h200).unwrap().0,
            Device::Cuda(0)
        );
        assert!(DeviceChoice::Cuda(1).resolve(&h200).is_err());
    }

    #[test]
    fn probing_never_panics() {
        let probe = probe();
        if !probe.driver {
            assert!(probe.devices.is_empty());
            assert!(probe.problem.is_some());
        }
    }
}
