//! Elementwise ops: SwiGLU, exact GELU, residual add, scaling.

use super::cuda;
use super::{common_device, cpu_f32, expect_same};
use crate::cpu::activation as k;
use crate::error::Result;
use crate::tensor::{Device, Tensor};

/// `silu(gate) · up`, elementwise; both operands have one shape.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    let mut profile = super::profile::scope("elementwise", "swiglu");
    super::profile::work(&mut profile, 0, 4 * (3 * gate.numel()) as u64);
    const OP: &str = "swiglu";
    expect_same(OP, "gate", gate, "up", up)?;
    match common_device(OP, &[gate, up])? {
        Device::Cpu => cpu_f32(k::swiglu_forward(&gate.f32_cow(OP, "gate")?, &up.f32_cow(OP, "up")?), gate.dims()),
        Device::Cuda(_) => cuda::swiglu(gate, up),
    }
}

/// Backward of [`swiglu`]: `(d_gate, d_up)`.
pub fn swiglu_backward(gate: &Tensor, up: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
    let mut profile = super::profile::scope("elementwise", "swiglu_backward");
    super::profile::work(&mut profile, 0, 4 * (5 * gate.numel()) as u64);
    const OP: &str = "swiglu_backward";
    expect_same(OP, "gate", gate, "up", up)?;
    expect_same(OP, "gate", gate, "dy", dy)?;
    match common_device(OP, &[gate, up, dy])? {
        Device::Cpu => {
            let (dg, du) =
                k::swiglu_backward(&gate.f32_cow(OP, "gate")?, &up.f32_cow(OP, "up")?, &dy.f32_cow(OP, "dy")?);
            Ok((cpu_f32(dg, gate.dims())?, cpu_f32(du, gate.dims())?))
        }
        Device::Cuda(_) => cuda::swiglu_backward(gate, up, dy),
    }
}

/// Exact GELU `0.5·x·(1 + erf(x/√2))` (the vision merger's activation).
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    let mut profile = super::profile::scope("elementwise", "gelu");
    super::profile::work(&mut profile, 0, 4 * (2 * x.numel()) as u64);
    const OP: &str = "gelu";
    match common_device(OP, &[x])? {
        Device::Cpu => cpu_f32(k::gelu_forward(&x.f32_cow(OP, "x")?), x.dims()),
        Device::Cuda(_) => cuda::gelu(x),
    }
}

/// Backward of [`gelu`].
pub fn gelu_backward(x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let mut profile = super::profile::scope("elementwise", "gelu_backward");
    super::profile::work(&mut profile, 0, 4 * (3 * x.numel()) as u64);
    const OP: &str = "gelu_backward";
    expect_same(OP, "x", x, "dy", dy)?;
    match common_device(OP, &[x, dy])? {
        Device::Cpu => cpu_f32(k::gelu_backward(&x.f32_cow(OP, "x")?, &dy.f32_cow(OP, "dy")?), x.dims()),
        Device::Cuda(_) => cuda::gelu_backward(x, dy),
    }
}

/// `a + b` (same shape; no broadcasting). The residual add; its backward passes
/// the gradient to both operands unchanged.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let mut profile = super::profile::scope("elementwise", "add");
    super::profile::work(&mut profile, 0, 4 * (3 * a.numel()) as u64);
    const OP: &str = "add";
    expect_same(OP, "a", a, "b", b)?;
    if let Device::Cuda(_) = common_device(OP, &[a, b])? {
        return cuda::add(a, b);
    }
    let mut out = a.to_dtype(crate::tensor::DType::F32)?.copy()?;
    add_scaled_assign(&mut out, b, 1.0)?;
    Ok(out)
}

/// `a += alpha · b` in place; `a` must be f32 (a gradient or master weight) on
/// the CPU; on CUDA a bf16 `a` (an activation gradient) is allowed too.
pub fn add_scaled_assign(a: &mut Tensor, b: &Tensor, alpha: f32) -> Result<()> {
    let mut profile = super::profile::scope("elementwise", "add_scaled_assign");
    super::profile::work(&mut profile, 0, 4 * (3 * a.numel()) as u64);
    const OP: &str = "add_scaled_assign";
    expect_same(OP, "a", a, "b", b)?;
    match common_device(OP, &[a, b])? {
        Device::Cpu => {
            let bv = b.f32_cow(OP, "b")?.into_owned();
            k::axpy(a.f32_slice_mut(OP, "a")?, &bv, alpha);
            Ok(())
        }
        Device::Cuda(_) => cuda::add_scaled_assign(a, b, alpha),
    }
}

/// `a *= alpha` in place (f32).
pub fn scale_assign(a: &mut Tensor, alpha: f32) -> Result<()> {
    let mut profile = super::profile::scope("elementwise", "scale_assign");
    super::profile::work(&mut profile, 0, 4 * (2 * a.numel()) as u64);
    const OP: &str = "scale_assign";
    match common_device(OP, &[a])? {
        Device::Cpu => {
            k::scale(a.f32_slice_mut(OP, "a")?, alpha);
            Ok(())
        }
        Device::Cuda(_) => cuda::scale_assign(a, alpha),
    }
}
