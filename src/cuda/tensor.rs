//! Tensors on a CUDA device: the storage variant behind `Storage::Cuda`, and the
//! bridge between [`Tensor`] and the kernel wrappers, which take whole
//! `CudaSlice`s.
//!
//! Dtypes on the device follow the kernels: activations and weights bf16,
//! statistics (rstd, lse, losses, log-probs) and gradients f32, ids and offsets
//! i32. An op whose kernel reads bf16 and is handed f32 (a gradient flowing into a
//! forward-style kernel) casts on the fly: a copy, visible in this file only.
//!
//! A tensor is a window into a shared buffer. A kernel needs a buffer holding
//! exactly its elements, so a window smaller than its buffer (a dim-0 `narrow`)
//! is copied first; whole-buffer tensors are borrowed, the common case.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DeviceRepr};
use half::bf16;

use super::device::{CudaDevice, grid_for, launch, params};
use super::strided::CopyPlan;
use crate::error::{Error, Result};
use crate::tensor::{CpuStorage, DType, Device, Shape, Tensor};
use crate::{arg_err, shape_err};

/// Device memory of one dtype, with the device it lives on.
///
/// Field order matters: fields drop in declaration order, so the buffer goes
/// back to its pool before this storage's reference to the handle (possibly
/// the last one, which destroys the pool) is released.
#[derive(Clone)]
pub struct CudaStorage {
    pub buf: CudaBuf,
    pub dev: Arc<CudaDevice>,
}

#[derive(Clone)]
pub enum CudaBuf {
    F32(CudaSlice<f32>),
    BF16(CudaSlice<bf16>),
    I32(CudaSlice<i32>),
}

impl fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CudaStorage(cuda:{}, {:?}, {} elements)", self.dev.ordinal(), self.dtype(), self.len())
    }
}

impl CudaStorage {
    pub fn dtype(&self) -> DType {
        match self.buf {
            CudaBuf::F32(_) => DType::F32,
            CudaBuf::BF16(_) => DType::BF16,
            CudaBuf::I32(_) => DType::I32,
        }
    }
    pub fn len(&self) -> usize {
        match &self.buf {
            CudaBuf::F32(s) => s.len(),
            CudaBuf::BF16(s) => s.len(),
            CudaBuf::I32(s) => s.len(),
        }
    }
    /// The ordinal of the device holding it.
    pub fn ordinal(&self) -> usize {
        self.dev.ordinal()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Uploads host memory to device `ordinal`.
    pub fn upload(host: &CpuStorage, ordinal: usize) -> Result<CudaStorage> {
        const OP: &str = "Tensor::to_device";
        let dev = super::device::shared(ordinal)?;
        let buf = match host {
            CpuStorage::F32(v) => CudaBuf::F32(dev.upload(v, OP)?),
            CpuStorage::BF16(v) => CudaBuf::BF16(dev.upload(v, OP)?),
            CpuStorage::I32(v) => CudaBuf::I32(dev.upload(v, OP)?),
        };
        Ok(CudaStorage { dev, buf })
    }

    /// `n` zeroed elements on device `ordinal`.
    pub fn zeros(ordinal: usize, dtype: DType, n: usize) -> Result<CudaStorage> {
        const OP: &str = "Tensor::zeros";
        let dev = super::device::shared(ordinal)?;
        let buf = match dtype {
            DType::F32 => CudaBuf::F32(dev.zeros(n, OP)?),
            DType::BF16 => CudaBuf::BF16(dev.zeros(n, OP)?),
            DType::I32 => CudaBuf::I32(dev.zeros(n, OP)?),
        };
        Ok(CudaStorage { dev, buf })
    }

    /// Copies elements `range` back to the host (waits for the stream).
    pub fn download(&self, range: std::ops::Range<usize>) -> Result<CpuStorage> {
        const OP: &str = "Tensor::to_device";
        let d = &self.dev;
        Ok(match &self.buf {
            CudaBuf::F32(b) => CpuStorage::F32(d.download_view(&b.slice(range), OP)?),
            CudaBuf::BF16(b) => CpuStorage::BF16(d.download_view(&b.slice(range), OP)?),
            CudaBuf::I32(b) => CpuStorage::I32(d.download_view(&b.slice(range), OP)?),
        })
    }

    /// A new buffer holding elements `range` (a device-to-device copy).
    pub fn copy_range(&self, range: std::ops::Range<usize>, op: &'static str) -> Result<CudaStorage> {
        let d = &self.dev;
        let buf = match &self.buf {
            CudaBuf::F32(b) => CudaBuf::F32(d.duplicate(&b.slice(range.clone()), op)?),
            CudaBuf::BF16(b) => CudaBuf::BF16(d.duplicate(&b.slice(range.clone()), op)?),
            CudaBuf::I32(b) => CudaBuf::I32(d.duplicate(&b.slice(range.clone()), op)?),
        };
        Ok(CudaStorage { dev: self.dev.clone(), buf })
    }
}

// ---- Tensor <-> kernel buffers ---------------------------------------------------------

/// The device handle of a CUDA tensor.
pub fn device_of(t: &Tensor, op: &'static str) -> Result<Arc<CudaDevice>> {
    t.cuda_window(op).map(|(s, _)| s.dev.clone())
}

/// Exactly the window's elements: borrowed when the window is the whole buffer.
fn window<'a, T: DeviceRepr>(
    dev: &CudaDevice,
    buf: &'a CudaSlice<T>,
    range: std::ops::Range<usize>,
    op: &'static str,
) -> Result<Cow<'a, CudaSlice<T>>> {
    if range.start == 0 && range.end == buf.len() {
        return Ok(Cow::Borrowed(buf));
    }
    dev.duplicate(&buf.slice(range), op).map(Cow::Owned)
}

/// The elements as bf16 (f32 is cast, a copy); integer tensors are an error.
pub fn bf16_of<'a>(t: &'a Tensor, op: &'static str, what: &'static str) -> Result<Cow<'a, CudaSlice<bf16>>> {
    let (s, r) = t.cuda_window(op)?;
    match &s.buf {
        CudaBuf::BF16(b) => window(&s.dev, b, r, op),
        CudaBuf::F32(b) => {
            let w = window(&s.dev, b, r, op)?;
            super::small_ops::cast_to_bf16(&s.dev, &w).map(Cow::Owned)
        }
        CudaBuf::I32(_) => Err(Error::DType { op, what, got: DType::I32, expected: "bf16 or f32" }),
    }
}

/// The elements as f32 (bf16 is cast, a copy); integer tensors are an error.
pub fn f32_of<'a>(t: &'a Tensor, op: &'static str, what: &'static str) -> Result<Cow<'a, CudaSlice<f32>>> {
    let (s, r) = t.cuda_window(op)?;
    match &s.buf {
        CudaBuf::F32(b) => window(&s.dev, b, r, op),
        CudaBuf::BF16(b) => {
            let w = window(&s.dev, b, r, op)?;
            super::small_ops::cast_to_f32(&s.dev, &w).map(Cow::Owned)
        }
        CudaBuf::I32(_) => Err(Error::DType { op, what, got: DType::I32, expected: "bf16 or f32" }),
    }
}

/// The f32 buffer of a tensor written in place (a gradient, a cache); other
/// dtypes are an error naming `op`.
pub fn f32_mut<'a>(t: &'a mut Tensor, op: &'static str, what: &'static str) -> Result<&'a mut CudaSlice<f32>> {
    match &mut t.cuda_storage_mut(op)?.buf {
        CudaBuf::F32(b) => Ok(b),
        b => Err(Error::DType { op, what, got: dtype_of(b), expected: "f32" }),
    }
}

/// The bf16 buffer of a tensor written in place.
pub fn bf16_mut<'a>(t: &'a mut Tensor, op: &'static str, what: &'static str) -> Result<&'a mut CudaSlice<bf16>> {
    match &mut t.cuda_storage_mut(op)?.buf {
        CudaBuf::BF16(b) => Ok(b),
        b => Err(Error::DType { op, what, got: dtype_of(b), expected: "bf16" }),
    }
}

/// The i32 elements (an index tensor already on the device), borrowed when
/// the window is the whole buffer.
pub fn i32_of<'a>(t: &'a Tensor, op: &'static str, what: &'static str) -> Result<Cow<'a, CudaSlice<i32>>> {
    let (s, r) = t.cuda_window(op)?;
    match &s.buf {
        CudaBuf::I32(b) => window(&s.dev, b, r, op),
        b => Err(Error::DType { op, what, got: dtype_of(b), expected: "i32" }),
    }
}

/// The i32 buffer of a tensor written in place (a block table).
pub fn i32_mut<'a>(t: &'a mut Tensor, op: &'static str, what: &'static str) -> Result<&'a mut CudaSlice<i32>> {
    match &mut t.cuda_storage_mut(op)?.buf {
        CudaBuf::I32(b) => Ok(b),
        b => Err(Error::DType { op, what, got: dtype_of(b), expected: "i32" }),
    }
}

fn dtype_of(b: &CudaBuf) -> DType {
    match b {
        CudaBuf::F32(_) => DType::F32,
        CudaBuf::BF16(_) => DType::BF16,
        CudaBuf::I32(_) => DType::I32,
    }
}

/// Wraps a kernel's bf16 output.
pub fn from_bf16(dev: &Arc<CudaDevice>, b: CudaSlice<bf16>, shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::from_cuda(CudaStorage { dev: dev.clone(), buf: CudaBuf::BF16(b) }, shape.into())
}

/// Wraps a kernel's f32 output.
pub fn from_f32(dev: &Arc<CudaDevice>, b: CudaSlice<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::from_cuda(CudaStorage { dev: dev.clone(), buf: CudaBuf::F32(b) }, shape.into())
}

/// The i32 elements on the host (index tensors: ids, positions, offsets), from
/// either device.
pub fn i32_host(t: &Tensor, op: &'static str, what: &'static str) -> Result<Vec<i32>> {
    match t.device() {
        Device::Cpu => Ok(t.i32_slice(op, what)?.to_vec()),
        Device::Cuda(_) => t.to_device(Device::Cpu)?.i32_slice(op, what).map(|v| v.to_vec()),
    }
}

// ---- casts and layout copies ----------------------------------------------------------

/// f32 <-> bf16 on the device.
pub fn cast(t: &Tensor, dtype: DType) -> Result<Tensor> {
    const OP: &str = "Tensor::to_dtype";
    let dev = device_of(t, OP)?;
    match dtype {
        DType::BF16 => from_bf16(&dev, bf16_of(t, OP, "input")?.into_owned(), t.dims()),
        DType::F32 => from_f32(&dev, f32_of(t, OP, "input")?.into_owned(), t.dims()),
        DType::I32 => Err(arg_err!(OP, "cannot cast {:?} to i32", t.dtype())),
    }
}

/// The strided copy kernel's parameter struct for `plan` (shared with the CPU emulator).
pub fn copy_params(op: &'static str, plan: &CopyPlan) -> Result<params::ActialStridedCopy> {
    let max = params::ACTIAL_MAX_COPY_RANK as usize;
    if plan.dims.len() > max {
        return Err(shape_err!(op, "rank {} is above the strided copy's {max}", plan.dims.len()));
    }
    let mut p = params::ActialStridedCopy {
        rank: plan.dims.len() as i32,
        numel: plan.dims.iter().product::<usize>() as i64,
        dims: [1; params::ACTIAL_MAX_COPY_RANK as usize],
        src_strides: [0; params::ACTIAL_MAX_COPY_RANK as usize],
        dst_strides: [0; params::ACTIAL_MAX_COPY_RANK as usize],
    };
    for (k, &d) in plan.dims.iter().enumerate() {
        p.dims[k] = d as i64;
        p.src_strides[k] = plan.src_strides[k] as i64;
        p.dst_strides[k] = plan.dst_strides[k] as i64;
    }
    Ok(p)
}

/// Threads per block of the strided copy.
pub const COPY_THREADS: u32 = 256;

/// Launches the strided copy between two views of one element size.
fn launch_copy<T: DeviceRepr>(
    dev: &CudaDevice,
    kernel: &'static str,
    src: &CudaView<'_, T>,
    dst: &mut CudaViewMut<'_, T>,
    p: params::ActialStridedCopy,
    op: &'static str,
) -> Result<()> {
    if p.numel == 0 {
        return Ok(());
    }
    launch!(dev, kernel, grid_for(p.numel as usize, COPY_THREADS), format!("{op} {:?}", &p.dims[..p.rank as usize]);
        src, dst, &p)
}

/// The strided copy of `plan` from `src`'s window into `dst`'s buffer (the
/// plan's offsets are relative to the window and to the buffer).
fn copy_into(src: &Tensor, dst: &mut CudaStorage, plan: &CopyPlan, op: &'static str) -> Result<()> {
    let (s, r) = src.cuda_window(op)?;
    let p = copy_params(op, plan)?;
    let (start, at) = (r.start + plan.src_offset, plan.dst_offset);
    let dev = dst.dev.clone();
    match (&s.buf, &mut dst.buf) {
        (CudaBuf::BF16(a), CudaBuf::BF16(b)) => {
            launch_copy(&dev, "strided_copy_u16", &a.slice(start..), &mut b.slice_mut(at..), p, op)
        }
        (CudaBuf::F32(a), CudaBuf::F32(b)) => {
            launch_copy(&dev, "strided_copy_u32", &a.slice(start..), &mut b.slice_mut(at..), p, op)
        }
        (CudaBuf::I32(a), CudaBuf::I32(b)) => {
            launch_copy(&dev, "strided_copy_u32", &a.slice(start..), &mut b.slice_mut(at..), p, op)
        }
        _ => Err(arg_err!(op, "dtypes differ: {:?} and {:?}", s.dtype(), dst.dtype())),
    }
}

fn alloc_like(dev: &Arc<CudaDevice>, dtype: DType, n: usize, op: &'static str) -> Result<CudaStorage> {
    let buf = match dtype {
        DType::F32 => CudaBuf::F32(dev.uninit(n, op)?),
        DType::BF16 => CudaBuf::BF16(dev.uninit(n, op)?),
        DType::I32 => CudaBuf::I32(dev.uninit(n, op)?),
    };
    Ok(CudaStorage { dev: dev.clone(), buf })
}

/// A new contiguous tensor from one strided copy of `t` (`permute`, inner-dim
/// `narrow`; plans in [`super::strided`]).
pub fn gather_strided(t: &Tensor, plan: &CopyPlan, op: &'static str) -> Result<Tensor> {
    let dev = device_of(t, op)?;
    let mut out = alloc_like(&dev, t.dtype(), plan.dims.iter().product(), op)?;
    copy_into(t, &mut out, plan, op)?;
    Tensor::from_cuda(out, Shape(plan.dims.clone()))
}

/// Concatenation along `dim` of tensors already checked to fit: one strided copy
/// per part into its slot of the output.
pub fn cat(parts: &[&Tensor], dim: usize, op: &'static str) -> Result<Tensor> {
    let first = parts.first().ok_or_else(|| arg_err!(op, "no tensors given"))?;
    let dev = device_of(first, op)?;
    let dims: Vec<&[usize]> = parts.iter().map(|p| p.dims()).collect();
    let (out_dims, plans) = super::strided::cat(&dims, dim);
    let mut out = alloc_like(&dev, first.dtype(), out_dims.iter().product(), op)?;
    for (p, plan) in parts.iter().zip(&plans) {
        copy_into(p, &mut out, plan, op)?;
    }
    Tensor::from_cuda(out, Shape(out_dims))
}

/// An error for CPU-only paths handed a CUDA tensor.
pub fn host_only(op: &'static str, what: &'static str, device: Device) -> Error {
    arg_err!(op, "{what} is on {device}; this path reads host memory (move it with to_device(Device::Cpu))")
}
