//! RMSNorm over the last dim.

use super::cuda;
use super::{common_device, cpu_f32, expect_dims};
use crate::cpu::norm as k;
use crate::error::Result;
use crate::shape_err;
use crate::tensor::{Device, Tensor};

/// `y = x / sqrt(mean(x²) + eps) · w` per row of `x: [.., D]`, `w: [D]`. Returns
/// `(y, rstd)` with `rstd: [rows]` saved for the backward.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<(Tensor, Tensor)> {
    let mut profile = super::profile::scope("norm", "rms_norm");
    super::profile::work(&mut profile, 0, 4 * (2 * x.numel()) as u64);
    const OP: &str = "rms_norm";
    let d = x.shape().last();
    if x.rank() == 0 || w.dims() != [d] {
        return Err(shape_err!(OP, "input {} and weight {} (expected [{d}])", x.shape(), w.shape()));
    }
    match common_device(OP, &[x, w])? {
        Device::Cpu => {
            let (y, rstd) = k::rms_norm_forward(&x.f32_cow(OP, "input")?, &w.f32_cow(OP, "weight")?, eps);
            Ok((cpu_f32(y, x.dims())?, cpu_f32(rstd, [x.shape().rows()])?))
        }
        Device::Cuda(_) => cuda::rms_norm(x, w, eps),
    }
}

/// `(h, y, rstd)` with `h = x + residual` and `(y, rstd) = rms_norm(h)`: a
/// decoder layer's residual add and the next norm. On CUDA one kernel (one
/// read of each input, no separate add launch); on the CPU the two ops.
pub fn add_rms_norm(x: &Tensor, residual: &Tensor, w: &Tensor, eps: f32) -> Result<(Tensor, Tensor, Tensor)> {
    // Its work is counted by the add and rms_norm it calls on the CPU.
    let _profile = super::profile::scope("norm", "add_rms_norm");
    const OP: &str = "add_rms_norm";
    let d = x.shape().last();
    if x.rank() == 0 || w.dims() != [d] {
        return Err(shape_err!(OP, "input {} and weight {} (expected [{d}])", x.shape(), w.shape()));
    }
    expect_dims(OP, "residual", residual, x.dims())?;
    match common_device(OP, &[x, residual, w])? {
        Device::Cpu => {
            let h = super::add(x, residual)?;
            let (y, rstd) = rms_norm(&h, w, eps)?;
            Ok((h, y, rstd))
        }
        Device::Cuda(_) => cuda::add_rms_norm(x, residual, w, eps),
    }
}

/// Backward of [`rms_norm`]: returns `dx`, accumulates `dw` when given.
pub fn rms_norm_backward(
    x: &Tensor,
    w: &Tensor,
    rstd: &Tensor,
    dy: &Tensor,
    dw: Option<&mut Tensor>,
) -> Result<Tensor> {
    let mut profile = super::profile::scope("norm", "rms_norm_backward");
    super::profile::work(&mut profile, 0, 4 * (3 * x.numel()) as u64);
    const OP: &str = "rms_norm_backward";
    let d = x.shape().last();
    expect_dims(OP, "weight", w, &[d])?;
    expect_dims(OP, "rstd", rstd, &[x.shape().rows()])?;
    expect_dims(OP, "dy", dy, x.dims())?;
    if let Some(dw) = &dw {
        expect_dims(OP, "dw", dw, &[d])?;
    }
    match common_device(OP, &[x, w, rstd, dy])? {
        Device::Cpu => {
            let dw_s = dw.map(|t| t.f32_slice_mut(OP, "dw")).transpose()?;
            let dx = k::rms_norm_backward(
                &x.f32_cow(OP, "input")?,
                &w.f32_cow(OP, "weight")?,
                &rstd.f32_cow(OP, "rstd")?,
                &dy.f32_cow(OP, "dy")?,
                dw_s,
            );
            cpu_f32(dx, x.dims())
        }
        Device::Cuda(_) => cuda::rms_norm_backward(x, w, rstd, dy, dw),
    }
}
