//! The op set, at the tensor level. Each op checks shapes, dtypes and devices and
//! returns an error naming itself and the shapes on misuse, then dispatches to the
//! device twin: `crate::cpu`, or [`cuda`] (this module's CUDA arm, calling
//! `crate::cuda`) in builds with the kernels. Model code calls only these
//! functions, never a device directly.
//!
//! Index tensors (token ids, labels, positions, `cu_seqlens`) may live on either
//! device: the ops read and range-check them on the host, so a batch's metadata
//! need not be copied to the GPU.
//!
//! Every op comes with its backward. Parameter gradients are accumulated (`+=`)
//! into caller-owned f32 tensors (`None` = frozen, not computed); input gradients are
//! returned as new tensors.

pub mod activation;
pub mod attention;
// Without the kernels the CUDA arm is a stand-in with the same functions, each
// an error saying the build lacks them (no tensor can be on CUDA there).
#[cfg_attr(not(actial_cuda), path = "cuda_standin.rs")]
pub mod cuda;
pub mod embedding;
pub mod lora;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod optim;
pub mod paged;
pub mod profile;
pub mod rope;
pub mod sampling;

pub use activation::*;
pub use attention::*;
pub use embedding::*;
pub use lora::*;
pub use loss::*;
pub use matmul::*;
pub use norm::*;
pub use optim::*;
pub use paged::*;
pub use rope::*;
pub use sampling::*;

use std::borrow::Cow;

use crate::error::{Error, Result};
use crate::tensor::{Device, Shape, Tensor};
use crate::{arg_err, shape_err};

/// The elements of an i32 tensor on the host: borrowed on the CPU, read back from
/// a CUDA device (index tensors are small and the ops check them on the host).
pub(crate) fn host_i32<'a>(t: &'a Tensor, op: &'static str, what: &'static str) -> Result<Cow<'a, [i32]>> {
    match t.device() {
        Device::Cpu => t.i32_slice(op, what).map(Cow::Borrowed),
        Device::Cuda(_) => {
            if t.dtype() != crate::tensor::DType::I32 {
                return Err(Error::DType { op, what, got: t.dtype(), expected: "i32" });
            }
            t.to_vec_i32().map(Cow::Owned)
        }
    }
}

/// The one device all `tensors` share, or an error naming `op`.
pub(crate) fn common_device(op: &'static str, tensors: &[&Tensor]) -> Result<Device> {
    let d = tensors.first().map(|t| t.device()).unwrap_or(Device::Cpu);
    for t in tensors {
        if t.device() != d {
            return Err(Error::DeviceMismatch { op, a: d, b: t.device() });
        }
    }
    match d {
        Device::Cpu => Ok(d),
        Device::Cuda(_) => {
            d.check_available()?;
            Ok(d)
        }
    }
}

/// Errors unless `t` has exactly `dims`.
pub(crate) fn expect_dims(op: &'static str, what: &str, t: &Tensor, dims: &[usize]) -> Result<()> {
    if t.dims() != dims {
        return Err(shape_err!(op, "{what} has shape {}, expected {:?}", t.shape(), dims));
    }
    Ok(())
}

/// Errors unless `t` has rank `rank`.
pub(crate) fn expect_rank(op: &'static str, what: &str, t: &Tensor, rank: usize) -> Result<()> {
    if t.rank() != rank {
        return Err(shape_err!(op, "{what} has shape {}, expected rank {rank}", t.shape()));
    }
    Ok(())
}

/// Errors unless `a` and `b` have the same shape.
pub(crate) fn expect_same(op: &'static str, a_name: &str, a: &Tensor, b_name: &str, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(shape_err!(op, "{a_name} {} and {b_name} {} must have the same shape", a.shape(), b.shape()));
    }
    Ok(())
}

/// Wraps a CPU result buffer as an f32 tensor.
pub(crate) fn cpu_f32(data: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::from_f32(data, shape, Device::Cpu)
}

/// Reads an index tensor (i32, rank 1) to host `usize`s, checking each is in
/// `0..bound`; the error names the offending row.
pub(crate) fn host_indices(op: &'static str, what: &str, t: &Tensor, bound: usize) -> Result<Vec<usize>> {
    expect_rank(op, what, t, 1)?;
    host_i32(t, op, "index")?
        .iter()
        .enumerate()
        .map(|(row, &i)| {
            if i < 0 || i as usize >= bound {
                Err(arg_err!(op, "{what}[{row}] = {i} is outside 0..{bound}"))
            } else {
                Ok(i as usize)
            }
        })
        .collect()
}
