//! LoRA linear layers: a frozen `W` (and bias) plus a trained low-rank update.

use super::cuda;
use super::{common_device, cpu_f32, expect_dims, expect_rank};
use crate::cpu::lora as k;
use crate::error::Result;
use crate::shape_err;
use crate::tensor::{Device, Tensor};

/// Forward result: `y: [.., out]` and `xa = x·Aᵀ: [rows, r]` saved for the backward.
pub struct LoraOut {
    pub y: Tensor,
    pub xa: Tensor,
}

/// Checks operands; returns (rows, in, out, r).
fn lora_dims(op: &'static str, x: &Tensor, w: &Tensor, a: &Tensor, b: &Tensor) -> Result<(usize, usize, usize, usize)> {
    expect_rank(op, "W", w, 2)?;
    expect_rank(op, "lora_A", a, 2)?;
    let (dout, din, r) = (w.dims()[0], w.dims()[1], a.dims()[0]);
    if x.rank() == 0 || x.shape().last() != din {
        return Err(shape_err!(op, "input {} does not end in {din} (W is {})", x.shape(), w.shape()));
    }
    expect_dims(op, "lora_A", a, &[r, din])?;
    expect_dims(op, "lora_B", b, &[dout, r])?;
    Ok((x.shape().rows(), din, dout, r))
}

/// `y = x·Wᵀ + bias + scale·(x·Aᵀ)·Bᵀ`, `W: [out, in]`, `A: [r, in]`, `B: [out, r]`
/// (PEFT's lora_A / lora_B layouts), `scale = alpha / r`.
pub fn lora_linear(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    a: &Tensor,
    b: &Tensor,
    scale: f32,
) -> Result<LoraOut> {
    let mut profile = super::profile::scope("lora", "lora_linear");
    const OP: &str = "lora_linear";
    let (rows, din, dout, r) = lora_dims(OP, x, w, a, b)?;
    // x·Wᵀ, then (x·Aᵀ)·Bᵀ.
    let (m, i, o, rk) = (rows as u64, din as u64, dout as u64, r as u64);
    super::profile::work(&mut profile, 2 * m * (i * o + rk * (i + o)), 4 * (m * i + i * o + m * o + rk * (i + o)));
    if let Some(bias) = bias {
        expect_dims(OP, "bias", bias, &[dout])?;
    }
    let mut devs = vec![x, w, a, b];
    devs.extend(bias);
    let mut out_dims = x.dims().to_vec();
    *out_dims.last_mut().expect("rank checked") = dout;
    match common_device(OP, &devs)? {
        Device::Cpu => {
            let bias_v = bias.map(|t| t.f32_cow(OP, "bias")).transpose()?;
            let (y, xa) = k::lora_forward(
                &x.f32_cow(OP, "input")?,
                &w.f32_cow(OP, "W")?,
                bias_v.as_deref(),
                &a.f32_cow(OP, "lora_A")?,
                &b.f32_cow(OP, "lora_B")?,
                scale,
                rows,
                din,
                dout,
                r,
            );
            Ok(LoraOut { y: cpu_f32(y, out_dims)?, xa: cpu_f32(xa, [rows, r])? })
        }
        Device::Cuda(_) => {
            cuda::lora_linear(x, w, bias, a, b, crate::cuda::LoraShape { rows, din, dout, rank: r, scale }, out_dims)
        }
    }
}

/// Backward of [`lora_linear`]: returns `dx`; accumulates into `da` and `db`
/// (W and bias are frozen).
pub fn lora_linear_backward(
    x: &Tensor,
    w: &Tensor,
    a: &Tensor,
    b: &Tensor,
    scale: f32,
    fwd: &LoraOut,
    dy: &Tensor,
    da: &mut Tensor,
    db: &mut Tensor,
) -> Result<Tensor> {
    let mut profile = super::profile::scope("lora", "lora_linear_backward");
    const OP: &str = "lora_linear_backward";
    let (rows, din, dout, r) = lora_dims(OP, x, w, a, b)?;
    // dx = dy·W + s·(dy·B)·A, dB += s·dyᵀ·xa, dA += s·(dy·B)ᵀ·x.
    let (m, i, o, rk) = (rows as u64, din as u64, dout as u64, r as u64);
    super::profile::work(
        &mut profile,
        2 * m * (i * o + 2 * rk * (i + o)),
        4 * (2 * m * i + i * o + m * o + rk * (i + o)),
    );
    expect_dims(OP, "dy", dy, fwd.y.dims())?;
    expect_dims(OP, "xa", &fwd.xa, &[rows, r])?;
    expect_dims(OP, "dA", da, a.dims())?;
    expect_dims(OP, "dB", db, b.dims())?;
    match common_device(OP, &[x, w, a, b, dy, &fwd.xa])? {
        Device::Cpu => {
            let dx = k::lora_backward(
                &x.f32_cow(OP, "input")?,
                &w.f32_cow(OP, "W")?,
                &a.f32_cow(OP, "lora_A")?,
                &b.f32_cow(OP, "lora_B")?,
                &fwd.xa.f32_cow(OP, "xa")?,
                &dy.f32_cow(OP, "dy")?,
                scale,
                rows,
                din,
                dout,
                r,
                da.f32_slice_mut(OP, "dA")?,
                db.f32_slice_mut(OP, "dB")?,
            );
            cpu_f32(dx, x.dims())
        }
        Device::Cuda(_) => cuda::lora_linear_backward(
            x,
            w,
            a,
            b,
            crate::cuda::LoraShape { rows, din, dout, rank: r, scale },
            &fwd.xa,
            dy,
            da,
            db,
        ),
    }
}
