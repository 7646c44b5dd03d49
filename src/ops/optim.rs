//! Optimizer ops: multi-tensor AdamW and global-norm gradient clipping.

use super::cuda;
use super::{common_device, expect_same};
use crate::cpu::optim as k;
pub use crate::cpu::optim::AdamW;
use crate::error::Result;
use crate::tensor::{Device, Tensor};
use crate::{arg_err, shape_err};

/// One parameter with its gradient and AdamW moments (all f32, one shape).
pub struct AdamSlot<'a> {
    pub param: &'a mut Tensor,
    pub grad: &'a Tensor,
    pub m: &'a mut Tensor,
    pub v: &'a mut Tensor,
}

/// One AdamW step (torch semantics; `step` counts from 1) over many tensors: on
/// the CPU one tensor after another, on CUDA one multi-tensor launch for all.
/// Gradients are read multiplied by `grad_scale` (a clip coefficient, or 1) and
/// left unchanged.
pub fn adamw_step(slots: &mut [AdamSlot<'_>], h: &AdamW, step: u64, grad_scale: f32) -> Result<bool> {
    let _profile = super::profile::scope("optimizer", "adamw_step");
    const OP: &str = "adamw_step";
    if step == 0 {
        return Err(arg_err!(OP, "step counts from 1"));
    }
    let mut device = None;
    for (i, s) in slots.iter().enumerate() {
        expect_same(OP, "param", s.param, "grad", s.grad)?;
        if s.m.shape() != s.param.shape() || s.v.shape() != s.param.shape() {
            return Err(shape_err!(
                OP,
                "slot {i}: moments {} / {} do not match param {}",
                s.m.shape(),
                s.v.shape(),
                s.param.shape()
            ));
        }
        let d = common_device(OP, &[s.param, s.grad, s.m, s.v])?;
        if let Some(prev) = device.filter(|&p| p != d) {
            return Err(crate::error::Error::DeviceMismatch { op: OP, a: prev, b: d });
        }
        device = Some(d);
    }
    match device {
        None => Ok(true),
        Some(Device::Cpu) => {
            let mut finite = true;
            for s in slots.iter_mut() {
                let g = s.grad.f32_slice(OP, "grad")?;
                finite &= k::adamw_step(
                    s.param.f32_slice_mut(OP, "param")?,
                    g,
                    s.m.f32_slice_mut(OP, "m")?,
                    s.v.f32_slice_mut(OP, "v")?,
                    h,
                    step,
                    grad_scale,
                );
            }
            Ok(finite)
        }
        Some(Device::Cuda(_)) => cuda::adamw_step(slots, h, step, grad_scale),
    }
}

/// The L2 norm of all gradients together (f64 accumulation).
pub fn grad_norm(grads: &[&Tensor]) -> Result<f64> {
    let _profile = super::profile::scope("optimizer", "grad_norm");
    const OP: &str = "grad_norm";
    if grads.is_empty() {
        return Ok(0.0);
    }
    match common_device(OP, grads)? {
        Device::Cpu => {
            let mut ss = 0.0f64;
            for g in grads {
                ss += k::sum_squares(&g.f32_cow(OP, "grad")?);
            }
            Ok(ss.sqrt())
        }
        Device::Cuda(_) => cuda::grad_norm(grads),
    }
}

/// Scales all gradients so their global norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_`. Returns the norm before clipping; a
/// non-finite norm is an error and leaves the gradients untouched.
pub fn clip_grad_norm(grads: &mut [&mut Tensor], max_norm: f64) -> Result<f64> {
    let _profile = super::profile::scope("optimizer", "clip_grad_norm");
    let norm = grad_norm(&grads.iter().map(|g| &**g).collect::<Vec<_>>())?;
    if !norm.is_finite() {
        return Err(arg_err!("clip_grad_norm", "gradient norm is {norm}: a gradient holds NaN or inf"));
    }
    let coef = k::clip_coef(norm, max_norm);
    if coef < 1.0 {
        for g in grads.iter_mut() {
            super::scale_assign(g, coef)?;
        }
    }
    Ok(norm)
}
