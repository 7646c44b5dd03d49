//! Matrix products: batched matmul with transpose flags, and linear layers.

use super::cuda;
use super::{common_device, cpu_f32, expect_dims, expect_rank};
use crate::cpu::matmul as k;
use crate::error::Result;
use crate::shape_err;
use crate::tensor::{Device, Tensor};

const OP_MM: &str = "matmul";

/// Splits a rank-2 or rank-3 operand into (batch, rows, cols) of its *stored* layout.
fn bmk(op: &'static str, what: &str, t: &Tensor) -> Result<(usize, usize, usize)> {
    match t.dims() {
        [r, c] => Ok((1, *r, *c)),
        [b, r, c] => Ok((*b, *r, *c)),
        _ => Err(shape_err!(op, "{what} has shape {}, expected rank 2 or 3", t.shape())),
    }
}

/// `C = op(A)·op(B)` where `op(X) = Xᵀ` when its flag is set (transposing the last
/// two dims). A and B are both rank 2, or both rank 3 with the same batch size:
/// there is no broadcasting. On the CPU bf16 inputs are upcast and the result is f32;
/// on CUDA the result is bf16 (f32 accumulation).
pub fn matmul(a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Result<Tensor> {
    let mut profile = super::profile::scope("matmul", "matmul");
    let dev = common_device(OP_MM, &[a, b])?;
    let (ba, ra, ca) = bmk(OP_MM, "a", a)?;
    let (bb, rb, cb) = bmk(OP_MM, "b", b)?;
    if a.rank() != b.rank() || ba != bb {
        return Err(shape_err!(OP_MM, "a {} and b {} must have the same rank and batch size", a.shape(), b.shape()));
    }
    let (m, ka) = if trans_a { (ca, ra) } else { (ra, ca) };
    let (kb, n) = if trans_b { (cb, rb) } else { (rb, cb) };
    if ka != kb {
        return Err(shape_err!(
            OP_MM,
            "inner dims differ: a {} (trans {trans_a}) gives k = {ka}, b {} (trans {trans_b}) gives k = {kb}",
            a.shape(),
            b.shape()
        ));
    }
    let out_dims: Vec<usize> = if a.rank() == 3 { vec![ba, m, n] } else { vec![m, n] };
    let (b_, m_, n_, k_) = (ba as u64, m as u64, n as u64, ka as u64);
    super::profile::work(&mut profile, 2 * b_ * m_ * n_ * k_, 4 * b_ * (m_ * k_ + k_ * n_ + m_ * n_));
    match dev {
        Device::Cpu => {
            let (x, y) = (a.f32_cow(OP_MM, "a")?, b.f32_cow(OP_MM, "b")?);
            let mut c = vec![0.0f32; ba * m * n];
            k::matmul(ba, m, n, ka, &x, m * ka, trans_a, &y, ka * n, trans_b, &mut c, false, 1.0);
            cpu_f32(c, out_dims)
        }
        Device::Cuda(_) => cuda::matmul(a, b, trans_a, trans_b, ba, m, n, ka, out_dims),
    }
}

/// Gradients of [`matmul`]: returns `(dA, dB)` in A's and B's stored layouts.
pub fn matmul_backward(a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool, dc: &Tensor) -> Result<(Tensor, Tensor)> {
    let _profile = super::profile::scope("matmul", "matmul_backward");
    let c_shape = matmul(a, b, trans_a, trans_b)?.shape().clone(); // checks shapes too
    if dc.shape() != &c_shape {
        return Err(shape_err!("matmul_backward", "dc has shape {}, expected {}", dc.shape(), c_shape));
    }
    let da = if trans_a { matmul(b, dc, trans_b, true)? } else { matmul(dc, b, false, !trans_b)? };
    let db = if trans_b { matmul(dc, a, true, trans_a)? } else { matmul(a, dc, !trans_a, false)? };
    Ok((da, db))
}

/// Checks a linear layer's operands; returns (rows, in, out).
fn linear_dims(op: &'static str, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<(usize, usize, usize)> {
    expect_rank(op, "weight", w, 2)?;
    let (dout, din) = (w.dims()[0], w.dims()[1]);
    if x.rank() == 0 || x.shape().last() != din {
        return Err(shape_err!(op, "input {} does not end in {din} (weight is {})", x.shape(), w.shape()));
    }
    if let Some(b) = b {
        expect_dims(op, "bias", b, &[dout])?;
    }
    Ok((x.shape().rows(), din, dout))
}

/// `y = x·Wᵀ + b` with `x: [.., in]`, `W: [out, in]` (the checkpoint layout),
/// `b: [out]`. Output `[.., out]`.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let mut profile = super::profile::scope("matmul", "linear");
    const OP: &str = "linear";
    let (rows, din, dout) = linear_dims(OP, x, w, b)?;
    let (r, i, o) = (rows as u64, din as u64, dout as u64);
    super::profile::work(&mut profile, 2 * r * i * o, 4 * (r * i + i * o + r * o));
    let mut devs = vec![x, w];
    devs.extend(b);
    let dev = common_device(OP, &devs)?;
    let mut out_dims = x.dims().to_vec();
    *out_dims.last_mut().expect("rank checked") = dout;
    match dev {
        Device::Cpu => {
            let bias = b.map(|b| b.f32_cow(OP, "bias")).transpose()?;
            let y = k::linear_forward(
                &x.f32_cow(OP, "input")?,
                &w.f32_cow(OP, "weight")?,
                bias.as_deref(),
                rows,
                din,
                dout,
            );
            cpu_f32(y, out_dims)
        }
        Device::Cuda(_) => cuda::linear(x, w, b, rows, din, dout),
    }
}

/// Backward of [`linear`]: returns `dx`; accumulates `dW += dyᵀ·x` and
/// `db += Σ dy` into the given f32 tensors (pass `None` for frozen ones).
pub fn linear_backward(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    dw: Option<&mut Tensor>,
    db: Option<&mut Tensor>,
) -> Result<Tensor> {
    let mut profile = super::profile::scope("matmul", "linear_backward");
    const OP: &str = "linear_backward";
    let (rows, din, dout) = linear_dims(OP, x, w, None)?;
    // dx = dy·W, and dW += dyᵀ·x when W trains.
    let (r, i, o, gemms) = (rows as u64, din as u64, dout as u64, 1 + u64::from(dw.is_some()));
    super::profile::work(&mut profile, gemms * 2 * r * i * o, 4 * (gemms * (r * o + i * o) + r * i * gemms));
    if dy.shape().rows() != rows || dy.shape().last() != dout {
        return Err(shape_err!(OP, "dy has shape {}, expected [{rows} rows, {dout}]", dy.shape()));
    }
    if let Some(dw) = &dw {
        expect_dims(OP, "dW", dw, w.dims())?;
    }
    if let Some(db) = &db {
        expect_dims(OP, "db", db, &[dout])?;
    }
    let dev = common_device(OP, &[x, w, dy])?;
    match dev {
        Device::Cpu => {
            let dw_s = dw.map(|t| t.f32_slice_mut(OP, "dW")).transpose()?;
            let db_s = db.map(|t| t.f32_slice_mut(OP, "db")).transpose()?;
            let dx = k::linear_backward(
                &x.f32_cow(OP, "input")?,
                &w.f32_cow(OP, "weight")?,
                &dy.f32_cow(OP, "dy")?,
                rows,
                din,
                dout,
                dw_s,
                db_s,
            );
            cpu_f32(dx, x.dims())
        }
        Device::Cuda(_) => cuda::linear_backward(x, w, dy, dw, db, rows, din, dout),
    }
}
