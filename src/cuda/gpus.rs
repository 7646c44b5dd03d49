//! Datasheet figures of the GPUs the plan and the benches know (available in
//! every build: the memory plan runs without the kernels).

/// A GPU's figures from its datasheet (dense bf16, no sparsity).
#[derive(Clone, Copy, Debug)]
pub struct GpuSpec {
    pub name: &'static str,
    pub memory_bytes: u64,
    pub bf16_tflops: f64,
    pub hbm_tbs: f64,
}

/// A100 SXM 80 GB, H100 SXM 80 GB, H200 SXM 141 GB.
pub const GPUS: [GpuSpec; 3] = [
    GpuSpec { name: "A100 80GB", memory_bytes: 80_000_000_000, bf16_tflops: 312.0, hbm_tbs: 2.039 },
    GpuSpec { name: "H100 80GB", memory_bytes: 80_000_000_000, bf16_tflops: 989.0, hbm_tbs: 3.35 },
    GpuSpec { name: "H200 141GB", memory_bytes: 141_000_000_000, bf16_tflops: 989.0, hbm_tbs: 4.8 },
];

impl GpuSpec {
    /// The datasheet figures of the GPU a driver names (e.g. "NVIDIA H200"),
    /// by its model ("A100", "H100", "H200"); an H100's for any other.
    pub fn for_device_name(device: &str) -> GpuSpec {
        let model = |g: &GpuSpec| g.name.split_whitespace().next().unwrap_or(g.name);
        GPUS.iter().find(|g| device.contains(model(g))).copied().unwrap_or(GPUS[1])
    }
}
