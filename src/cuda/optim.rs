//! Launch wrappers for `cuda/optim.cu`: one multi-tensor AdamW launch for all of
//! a model's trained tensors, preceded (when clipping) by one sum-of-squares
//! launch and one single-block reduction that leaves the clip coefficient on the
//! device, where AdamW reads it: no host round trip per step.

use cudarc::driver::CudaSlice;
use half::bf16;

use super::device::{CudaDevice, launch, params};
use crate::cpu::optim::AdamW;
use crate::error::Result;
use crate::shape_err;

const CHUNK: usize = params::ACTIAL_MULTI_TENSOR_CHUNK as usize;
/// Threads per multi-tensor block, and of the one clip-coefficient block.
pub const THREADS: u32 = params::ACTIAL_MULTI_TENSOR_THREADS;
pub const CLIP_THREADS: u32 = 1024;

/// All trained tensors of a model with their optimizer state, on the device:
/// f32 master weights, f32 gradients (the backward accumulates into them), both
/// moments, and optionally a bf16 copy of each weight that the forward reads.
pub struct AdamWGroup {
    pub params: Vec<CudaSlice<f32>>,
    pub grads: Vec<CudaSlice<f32>>,
    pub exp_avg: Vec<CudaSlice<f32>>,
    pub exp_avg_sq: Vec<CudaSlice<f32>>,
    pub bf16_copies: Vec<Option<CudaSlice<bf16>>>,
    slots: CudaSlice<params::ActialTensorSlot>,
    blocks: usize,
    partials: CudaSlice<f32>,
    /// `[norm, clip coefficient]` of the last clipped step.
    norm: CudaSlice<f32>,
}

impl AdamWGroup {
    /// Uploads `weights` (one host buffer per tensor); `bf16_copy` adds the bf16
    /// weights the forward reads, rewritten after each step.
    pub fn new(dev: &CudaDevice, weights: &[Vec<f32>], bf16_copy: bool) -> Result<AdamWGroup> {
        const OP: &str = "cuda::AdamWGroup::new";
        let mut g = AdamWGroup {
            params: Vec::new(),
            grads: Vec::new(),
            exp_avg: Vec::new(),
            exp_avg_sq: Vec::new(),
            bf16_copies: Vec::new(),
            slots: dev.upload(&[params::ActialTensorSlot::default()], OP)?,
            blocks: 0,
            partials: dev.zeros(1, OP)?,
            norm: dev.zeros(2, OP)?,
        };
        for w in weights {
            g.params.push(dev.upload(w, OP)?);
            g.grads.push(dev.zeros(w.len(), OP)?);
            g.exp_avg.push(dev.zeros(w.len(), OP)?);
            g.exp_avg_sq.push(dev.zeros(w.len(), OP)?);
            g.bf16_copies.push(if bf16_copy {
                let host: Vec<bf16> = w.iter().map(|&x| bf16::from_f32(x)).collect();
                Some(dev.upload(&host, OP)?)
            } else {
                None
            });
        }
        // The slot table holds raw addresses of buffers this group owns and never
        // reallocates, so it is built once.
        let mut slots = Vec::with_capacity(weights.len());
        let mut first_block = 0i64;
        for (i, w) in weights.iter().enumerate() {
            let numel = w.len();
            slots.push(params::ActialTensorSlot {
                param: dev.address(&g.params[i]) as *mut f32,
                grad: dev.address(&g.grads[i]) as *const f32,
                exp_avg: dev.address(&g.exp_avg[i]) as *mut f32,
                exp_avg_sq: dev.address(&g.exp_avg_sq[i]) as *mut f32,
                param_bf16: g.bf16_copies[i].as_ref().map_or(std::ptr::null_mut(), |c| dev.address(c) as *mut u16),
                numel: numel as i64,
                first_block,
            });
            first_block += numel.div_ceil(CHUNK) as i64;
        }
        g.blocks = first_block as usize;
        if !slots.is_empty() {
            g.slots = dev.upload(&slots, OP)?;
        }
        g.partials = dev.zeros(g.blocks.max(1), OP)?;
        Ok(g)
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Zeroes every gradient.
    pub fn zero_grad(&mut self, dev: &CudaDevice) -> Result<()> {
        for g in &mut self.grads {
            dev.memset_zeros(g, "cuda::AdamWGroup::zero_grad")?;
        }
        Ok(())
    }

    /// Global L2 norm of all gradients and the clip coefficient
    /// `min(1, max_norm / (norm + 1e-6))` (1 when `max_norm <= 0`), left on the device.
    fn compute_norm(&mut self, dev: &CudaDevice, max_norm: f32) -> Result<()> {
        let n = self.len() as i32;
        let shapes = format!("{} tensors, {} blocks", self.len(), self.blocks);
        let cfg = cudarc::driver::LaunchConfig {
            grid_dim: (self.blocks as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(dev, "sum_squares_multi", cfg, shapes; &self.slots, &n, &mut self.partials)?;
        let nb = self.blocks as i32;
        let one =
            cudarc::driver::LaunchConfig { grid_dim: (1, 1, 1), block_dim: (CLIP_THREADS, 1, 1), shared_mem_bytes: 0 };
        launch!(dev, "clip_coefficient", one, shapes; &self.partials, &nb, &max_norm, &mut self.norm)
    }

    /// The global gradient norm (synchronises; for logging).
    pub fn grad_norm(&mut self, dev: &CudaDevice) -> Result<f32> {
        if self.is_empty() {
            return Ok(0.0);
        }
        self.compute_norm(dev, 0.0)?;
        Ok(dev.download(&self.norm, "cuda::AdamWGroup::grad_norm")?[0])
    }

    /// One AdamW step (`step` counts from 1) on every tensor, gradients first
    /// clipped to `max_norm` when given, as torch's `clip_grad_norm_` + `AdamW`.
    pub fn step(&mut self, dev: &CudaDevice, h: &AdamW, step: u64, max_norm: Option<f32>) -> Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        if step == 0 {
            return Err(shape_err!("cuda::AdamWGroup::step", "step counts from 1"));
        }
        let grad_scale = match max_norm {
            Some(max) => {
                self.compute_norm(dev, max)?;
                // Element 1 of `norm`: the clip coefficient.
                (dev.address(&self.norm) + 4) as *const f32
            }
            None => std::ptr::null(),
        };
        launch_adamw(dev, &self.slots, self.len(), self.blocks, h, step, grad_scale, std::ptr::null_mut())
    }
}

/// One tensor of a multi-tensor AdamW step, by device address (f32 buffers of
/// `numel` elements each).
pub struct SlotAddrs {
    pub param: u64,
    pub grad: u64,
    pub exp_avg: u64,
    pub exp_avg_sq: u64,
    pub numel: usize,
}

/// The slot table of a multi-tensor launch (block offsets prefix-summed) and
/// its block count.
pub fn slot_table(slots: &[SlotAddrs]) -> (Vec<params::ActialTensorSlot>, usize) {
    let mut first_block = 0i64;
    let table = slots
        .iter()
        .map(|s| {
            let t = params::ActialTensorSlot {
                param: s.param as *mut f32,
                grad: s.grad as *const f32,
                exp_avg: s.exp_avg as *mut f32,
                exp_avg_sq: s.exp_avg_sq as *mut f32,
                param_bf16: std::ptr::null_mut(),
                numel: s.numel as i64,
                first_block,
            };
            first_block += s.numel.div_ceil(CHUNK) as i64;
            t
        })
        .collect();
    (table, first_block as usize)
}

/// The global L2 norm of the gradients of an uploaded slot table: one
/// sum-of-squares launch, one single-block reduction, one scalar read back.
pub fn global_grad_norm(
    dev: &CudaDevice,
    slots: &CudaSlice<params::ActialTensorSlot>,
    num_tensors: usize,
    blocks: usize,
) -> Result<f32> {
    const OP: &str = "cuda::global_grad_norm";
    if blocks == 0 {
        return Ok(0.0);
    }
    let mut partials = dev.uninit::<f32>(blocks, OP)?;
    let mut norm = dev.uninit::<f32>(2, OP)?;
    let (n, nb, no_clip) = (num_tensors as i32, blocks as i32, 0.0f32);
    let shapes = format!("{num_tensors} tensors, {blocks} blocks");
    let cfg =
        cudarc::driver::LaunchConfig { grid_dim: (nb as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
    launch!(dev, "sum_squares_multi", cfg, shapes; slots, &n, &mut partials)?;
    let one =
        cudarc::driver::LaunchConfig { grid_dim: (1, 1, 1), block_dim: (CLIP_THREADS, 1, 1), shared_mem_bytes: 0 };
    launch!(dev, "clip_coefficient", one, shapes; &partials, &nb, &no_clip, &mut norm)?;
    Ok(dev.download(&norm, OP)?[0])
}

/// The kernel's parameter struct for step `step` (from 1): the same f64 bias
/// corrections as the CPU twin. Shared with the CPU emulator of the kernel.
pub fn adamw_params(
    h: &AdamW,
    step: u64,
    num_tensors: usize,
    grad_scale: *const f32,
    nonfinite: *mut i32,
) -> params::ActialAdamWParams {
    let bc1 = 1.0 - (h.beta1 as f64).powi(step as i32);
    let bc2 = 1.0 - (h.beta2 as f64).powi(step as i32);
    params::ActialAdamWParams {
        lr: h.lr,
        beta1: h.beta1,
        beta2: h.beta2,
        eps: h.eps,
        weight_decay: h.weight_decay,
        step_size: (h.lr as f64 / bc1) as f32,
        bc2_sqrt: bc2.sqrt() as f32,
        num_tensors: num_tensors as i32,
        grad_scale,
        nonfinite,
    }
}

/// One AdamW step over the tensors of an uploaded slot table, in one launch.
/// `grad_scale`: a device scalar multiplying every gradient, or null;
/// `nonfinite`: a device i32 the kernel sets to 1 on a non-finite weight or
/// moment, or null.
#[allow(clippy::too_many_arguments)]
pub fn launch_adamw(
    dev: &CudaDevice,
    slots: &CudaSlice<params::ActialTensorSlot>,
    num_tensors: usize,
    blocks: usize,
    h: &AdamW,
    step: u64,
    grad_scale: *const f32,
    nonfinite: *mut i32,
) -> Result<()> {
    if step == 0 {
        return Err(shape_err!("cuda::adamw", "step counts from 1"));
    }
    if blocks == 0 {
        return Ok(());
    }
    let p = adamw_params(h, step, num_tensors, grad_scale, nonfinite);
    let cfg = cudarc::driver::LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    launch!(dev, "adamw_multi_tensor", cfg, format!("{num_tensors} tensors, {blocks} blocks"); slots, &p)
}
