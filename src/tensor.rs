//! The tensor type: a shape, a dtype and a contiguous buffer on a device.
//!
//! Design choices, kept deliberately small:
//! - Tensors are always contiguous, row-major. A tensor is a window
//!   `[offset, offset + numel)` into a shared, reference-counted [`Storage`], so
//!   `clone`, `reshape` and `narrow` along dim 0 are free; every other layout change
//!   (`permute`, `narrow` on an inner dim, `cat`) is an explicit copy. Ops that would
//!   need a transposed operand take transpose flags instead (see `ops::matmul`).
//! - Writes go through [`Tensor::f32_slice_mut`], which copies the storage first if it
//!   is shared (copy-on-write), so a mutation never leaks into another tensor.
//! - Device dispatch happens in the ops, one `match` on the device each. The CUDA
//!   variant of [`Storage`] holds `crate::cuda::tensor::CudaStorage` (its dtype
//!   policy and the copies it makes are there); in a build without the kernels
//!   that type is a stand-in no value of which exists (`crate::cuda::standin`).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use half::bf16;

use crate::error::{Error, Result};
use crate::{arg_err, shape_err};

/// Element types. Compute is f32 on the CPU; bf16 is a storage type (weights from
/// checkpoints) that ops upcast on read; i32 holds token ids, labels (-100 =
/// ignore), positions and segment offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    BF16,
    I32,
}

impl DType {
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::BF16 => 2,
        }
    }
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::BF16)
    }
}

/// Where a tensor's memory lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
    /// A CUDA device by ordinal (`crate::cuda`).
    Cuda(usize),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl Device {
    /// Parses `cpu`, `cuda` or `cuda:N`, and checks the device can be used.
    pub fn parse(s: &str) -> Result<Device> {
        let dev = match s {
            "cpu" => Device::Cpu,
            "cuda" => Device::Cuda(0),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Device::Cuda(i),
                _ => {
                    return Err(arg_err!("Device::parse", "unknown device {s:?}; expected cpu, cuda or cuda:N"));
                }
            },
        };
        dev.check_available()?;
        Ok(dev)
    }

    /// Waits until all work queued on the device has finished (a no-op on the
    /// CPU, whose ops return when done). Timings of CUDA work need it.
    pub fn synchronize(&self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Cuda(i) => crate::cuda::device::shared(*i)?.synchronize("Device::synchronize"),
        }
    }

    /// Ok for devices this build can allocate on (a CUDA device is opened on
    /// first use); a clear error otherwise.
    pub fn check_available(&self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Cuda(i) => crate::cuda::device::shared(*i).map(|_| ()).map_err(|e| match e {
                Error::DeviceUnavailable { device, why } => {
                    Error::DeviceUnavailable { device, why: format!("{why}; use --device cpu") }
                }
                e => e,
            }),
        }
    }
}

/// A tensor's dimensions, outermost first.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub Vec<usize>);

impl Shape {
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }
    /// Size of the last dim (1 for a scalar).
    pub fn last(&self) -> usize {
        self.0.last().copied().unwrap_or(1)
    }
    /// Product of all dims but the last: the number of rows of a `[.., D]` tensor.
    pub fn rows(&self) -> usize {
        if self.0.is_empty() { 1 } else { self.0[..self.0.len() - 1].iter().product() }
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Self {
        Shape(d.to_vec())
    }
}
impl<const N: usize> From<[usize; N]> for Shape {
    fn from(d: [usize; N]) -> Self {
        Shape(d.to_vec())
    }
}
impl From<Vec<usize>> for Shape {
    fn from(d: Vec<usize>) -> Self {
        Shape(d)
    }
}

/// Host memory of one dtype.
#[derive(Clone, Debug)]
pub enum CpuStorage {
    F32(Vec<f32>),
    BF16(Vec<bf16>),
    I32(Vec<i32>),
}

impl CpuStorage {
    fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::I32(_) => DType::I32,
        }
    }
    fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::BF16(v) => v.len(),
            CpuStorage::I32(v) => v.len(),
        }
    }
}

/// A buffer on a device. One variant per backend.
#[derive(Clone, Debug)]
pub enum Storage {
    Cpu(CpuStorage),
    Cuda(crate::cuda::tensor::CudaStorage),
}

impl Storage {
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda(s) => Device::Cuda(s.ordinal()),
        }
    }
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
            Storage::Cuda(s) => s.dtype(),
        }
    }
}

#[derive(Clone)]
pub struct Tensor {
    storage: Arc<Storage>,
    offset: usize,
    shape: Shape,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({}, {:?}, {})", self.shape, self.dtype(), self.device())
    }
}

impl Tensor {
    // ---- construction -------------------------------------------------------------

    fn from_cpu(data: CpuStorage, shape: Shape, op: &'static str) -> Result<Tensor> {
        if data.len() != shape.numel() {
            return Err(shape_err!(
                op,
                "{} elements given for shape {} ({} elements)",
                data.len(),
                shape,
                shape.numel()
            ));
        }
        Ok(Tensor { storage: Arc::new(Storage::Cpu(data)), offset: 0, shape })
    }

    fn from_host(data: CpuStorage, shape: Shape, device: Device, op: &'static str) -> Result<Self> {
        device.check_available()?;
        Tensor::from_cpu(data, shape, op)?.to_device(device)
    }

    pub fn from_f32(data: Vec<f32>, shape: impl Into<Shape>, device: Device) -> Result<Tensor> {
        Self::from_host(CpuStorage::F32(data), shape.into(), device, "Tensor::from_f32")
    }
    pub fn from_bf16(data: Vec<bf16>, shape: impl Into<Shape>, device: Device) -> Result<Tensor> {
        Self::from_host(CpuStorage::BF16(data), shape.into(), device, "Tensor::from_bf16")
    }
    pub fn from_i32(data: Vec<i32>, shape: impl Into<Shape>, device: Device) -> Result<Tensor> {
        Self::from_host(CpuStorage::I32(data), shape.into(), device, "Tensor::from_i32")
    }

    pub fn zeros(shape: impl Into<Shape>, dtype: DType, device: Device) -> Result<Tensor> {
        let shape = shape.into();
        let n = shape.numel();
        if let Device::Cuda(i) = device {
            return Tensor::from_cuda(crate::cuda::tensor::CudaStorage::zeros(i, dtype, n)?, shape);
        }
        let data = match dtype {
            DType::F32 => CpuStorage::F32(vec![0.0; n]),
            DType::BF16 => CpuStorage::BF16(vec![bf16::ZERO; n]),
            DType::I32 => CpuStorage::I32(vec![0; n]),
        };
        Self::from_host(data, shape, device, "Tensor::zeros")
    }

    /// A tensor of the same shape, dtype and device, filled with zeros.
    pub fn zeros_like(&self) -> Result<Tensor> {
        Tensor::zeros(self.shape.clone(), self.dtype(), self.device())
    }

    // ---- accessors ------------------------------------------------------------------

    pub fn shape(&self) -> &Shape {
        &self.shape
    }
    pub fn dims(&self) -> &[usize] {
        &self.shape.0
    }
    pub fn rank(&self) -> usize {
        self.shape.rank()
    }
    pub fn numel(&self) -> usize {
        self.shape.numel()
    }
    pub fn dtype(&self) -> DType {
        self.storage.dtype()
    }
    pub fn device(&self) -> Device {
        self.storage.device()
    }
    pub fn storage(&self) -> &Storage {
        &self.storage
    }
    /// Bytes this tensor's elements take (not the whole shared storage).
    pub fn size_in_bytes(&self) -> usize {
        self.numel() * self.dtype().size_in_bytes()
    }

    /// `dims()[d]`, with a shape error naming `op` when `d` is out of range.
    pub fn dim(&self, d: usize, op: &'static str) -> Result<usize> {
        self.dims().get(d).copied().ok_or_else(|| shape_err!(op, "dim {d} out of range for shape {}", self.shape))
    }

    // ---- host views used by the CPU kernels ------------------------------------------

    /// The elements as f32, upcasting bf16 (a copy) and borrowing f32 (no copy).
    /// Integer tensors are an error naming `op`.
    pub fn f32_cow(&self, op: &'static str, what: &'static str) -> Result<Cow<'_, [f32]>> {
        let r = self.offset..self.offset + self.numel();
        match &*self.storage {
            Storage::Cpu(CpuStorage::F32(v)) => Ok(Cow::Borrowed(&v[r])),
            Storage::Cpu(CpuStorage::BF16(v)) => Ok(Cow::Owned(v[r].iter().map(|x| x.to_f32()).collect())),
            Storage::Cpu(CpuStorage::I32(_)) => {
                Err(Error::DType { op, what, got: DType::I32, expected: "f32 or bf16" })
            }
            Storage::Cuda(_) => Err(crate::cuda::tensor::host_only(op, what, self.device())),
        }
    }

    /// The elements of an f32 CPU tensor, borrowed.
    pub fn f32_slice(&self, op: &'static str, what: &'static str) -> Result<&[f32]> {
        let r = self.offset..self.offset + self.numel();
        match &*self.storage {
            Storage::Cpu(CpuStorage::F32(v)) => Ok(&v[r]),
            Storage::Cuda(_) => Err(crate::cuda::tensor::host_only(op, what, self.device())),
            s => Err(Error::DType { op, what, got: s.dtype(), expected: "f32" }),
        }
    }

    /// The elements of an f32 CPU tensor, mutable. Copies the storage first if another
    /// tensor shares it, so writes never show through a clone.
    pub fn f32_slice_mut(&mut self, op: &'static str, what: &'static str) -> Result<&mut [f32]> {
        let r = self.offset..self.offset + self.numel();
        let device = self.device();
        match Arc::make_mut(&mut self.storage) {
            Storage::Cpu(CpuStorage::F32(v)) => Ok(&mut v[r]),
            Storage::Cuda(_) => Err(crate::cuda::tensor::host_only(op, what, device)),
            s => Err(Error::DType { op, what, got: s.dtype(), expected: "f32" }),
        }
    }

    /// The elements of an i32 CPU tensor, borrowed.
    pub fn i32_slice(&self, op: &'static str, what: &'static str) -> Result<&[i32]> {
        let r = self.offset..self.offset + self.numel();
        match &*self.storage {
            Storage::Cpu(CpuStorage::I32(v)) => Ok(&v[r]),
            Storage::Cuda(_) => Err(crate::cuda::tensor::host_only(op, what, self.device())),
            s => Err(Error::DType { op, what, got: s.dtype(), expected: "i32" }),
        }
    }

    /// Copies the elements to a host `Vec<f32>` (bf16 upcast), from any device.
    pub fn to_vec_f32(&self) -> Result<Vec<f32>> {
        if self.device() != Device::Cpu {
            return self.to_device(Device::Cpu)?.to_vec_f32();
        }
        Ok(self.f32_cow("Tensor::to_vec_f32", "tensor")?.into_owned())
    }
    /// Copies the elements to a host `Vec<i32>`, from any device.
    pub fn to_vec_i32(&self) -> Result<Vec<i32>> {
        if self.device() != Device::Cpu {
            return self.to_device(Device::Cpu)?.to_vec_i32();
        }
        Ok(self.i32_slice("Tensor::to_vec_i32", "tensor")?.to_vec())
    }
    /// The single element of a one-element float tensor.
    pub fn to_scalar_f32(&self) -> Result<f32> {
        if self.numel() != 1 {
            return Err(shape_err!("Tensor::to_scalar_f32", "tensor of shape {} is not a scalar", self.shape));
        }
        Ok(self.to_vec_f32()?[0])
    }

    // ---- conversions ----------------------------------------------------------------

    /// Casts to `dtype` (float <-> float only; bf16 rounds to nearest even).
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        const OP: &str = "Tensor::to_dtype";
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        if !(dtype.is_float() && self.dtype().is_float()) {
            return Err(arg_err!(OP, "cannot cast {:?} to {:?}", self.dtype(), dtype));
        }
        match &*self.storage {
            Storage::Cpu(_) => {
                let x = self.f32_cow(OP, "input")?;
                let data = match dtype {
                    DType::F32 => CpuStorage::F32(x.into_owned()),
                    DType::BF16 => CpuStorage::BF16(x.iter().map(|&v| bf16::from_f32(v)).collect()),
                    DType::I32 => unreachable!("checked above"),
                };
                Tensor::from_cpu(data, self.shape.clone(), OP)
            }
            Storage::Cuda(_) => crate::cuda::tensor::cast(self, dtype),
        }
    }

    /// Copies to `device` (a no-op clone when already there).
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        device.check_available()?;
        let r = self.offset..self.offset + self.numel();
        match (&*self.storage, device) {
            (Storage::Cpu(_), Device::Cpu) => unreachable!("same device returned above"),
            (Storage::Cpu(_), Device::Cuda(i)) => {
                let host = match self.copy()?.storage.as_ref() {
                    Storage::Cpu(h) => crate::cuda::tensor::CudaStorage::upload(h, i)?,
                    _ => unreachable!("a copy stays on its device"),
                };
                Tensor::from_cuda(host, self.shape.clone())
            }
            (Storage::Cuda(s), Device::Cpu) => {
                Tensor::from_cpu(s.download(r)?, self.shape.clone(), "Tensor::to_device")
            }
            (Storage::Cuda(_), Device::Cuda(_)) => self.to_device(Device::Cpu)?.to_device(device),
        }
    }

    /// A contiguous copy that owns exactly its elements (drops a larger shared storage).
    pub fn copy(&self) -> Result<Tensor> {
        match &*self.storage {
            Storage::Cpu(s) => {
                let r = self.offset..self.offset + self.numel();
                let data = match s {
                    CpuStorage::F32(v) => CpuStorage::F32(v[r].to_vec()),
                    CpuStorage::BF16(v) => CpuStorage::BF16(v[r].to_vec()),
                    CpuStorage::I32(v) => CpuStorage::I32(v[r].to_vec()),
                };
                Tensor::from_cpu(data, self.shape.clone(), "Tensor::copy")
            }
            Storage::Cuda(s) => {
                let r = self.offset..self.offset + self.numel();
                Tensor::from_cuda(s.copy_range(r, "Tensor::copy")?, self.shape.clone())
            }
        }
    }

    // ---- CUDA storage, for crate::cuda::tensor ------------------------------------------

    /// Wraps a device buffer holding exactly `shape`'s elements.
    pub(crate) fn from_cuda(s: crate::cuda::tensor::CudaStorage, shape: Shape) -> Result<Tensor> {
        if s.len() != shape.numel() {
            return Err(shape_err!("Tensor::from_cuda", "{} elements given for shape {}", s.len(), shape));
        }
        Ok(Tensor { storage: Arc::new(Storage::Cuda(s)), offset: 0, shape })
    }

    /// The device buffer and this tensor's window in it; an error for host tensors.
    #[cfg(actial_cuda)]
    pub(crate) fn cuda_window(
        &self,
        op: &'static str,
    ) -> Result<(&crate::cuda::tensor::CudaStorage, std::ops::Range<usize>)> {
        match &*self.storage {
            Storage::Cuda(s) => Ok((s, self.offset..self.offset + self.numel())),
            Storage::Cpu(_) => Err(arg_err!(op, "tensor {} is on the CPU, expected a CUDA tensor", self.shape)),
        }
    }

    /// The device buffer for writing: made unshared (copy-on-write, as on the CPU)
    /// and exactly this tensor's window, so kernels can write it whole.
    #[cfg(actial_cuda)]
    pub(crate) fn cuda_storage_mut(&mut self, op: &'static str) -> Result<&mut crate::cuda::tensor::CudaStorage> {
        let whole = match &*self.storage {
            Storage::Cuda(s) => self.offset == 0 && s.len() == self.numel(),
            Storage::Cpu(_) => {
                return Err(arg_err!(op, "tensor {} is on the CPU, expected a CUDA tensor", self.shape));
            }
        };
        if !whole {
            *self = self.copy()?;
        }
        match Arc::make_mut(&mut self.storage) {
            Storage::Cuda(s) => Ok(s),
            Storage::Cpu(_) => unreachable!("checked above"),
        }
    }

    // ---- views and layout changes -----------------------------------------------------

    /// Same elements, new shape (free). The element count must match.
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape.numel() != self.numel() {
            return Err(shape_err!(
                "Tensor::reshape",
                "cannot reshape {} ({} elements) to {} ({} elements)",
                self.shape,
                self.numel(),
                shape,
                shape.numel()
            ));
        }
        Ok(Tensor { storage: self.storage.clone(), offset: self.offset, shape })
    }

    /// Elements `start..start+len` along `dim`. Free for dim 0 (a view into the same
    /// storage), a copy otherwise.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        const OP: &str = "Tensor::narrow";
        let size = self.dim(dim, OP)?;
        if start + len > size {
            return Err(shape_err!(OP, "range {start}..{} past the end of dim {dim} of {}", start + len, self.shape));
        }
        let mut dims = self.dims().to_vec();
        dims[dim] = len;
        let inner: usize = self.dims()[dim + 1..].iter().product();
        if dim == 0 {
            return Ok(Tensor {
                storage: self.storage.clone(),
                offset: self.offset + start * inner,
                shape: Shape(dims),
            });
        }
        if let Storage::Cuda(_) = &*self.storage {
            let plan = crate::cuda::strided::narrow(self.dims(), dim, start, len);
            return crate::cuda::tensor::gather_strided(self, &plan, OP);
        }
        let outer: usize = self.dims()[..dim].iter().product();
        let src: Vec<usize> = (0..outer)
            .flat_map(|o| {
                let s = (o * size + start) * inner;
                s..s + len * inner
            })
            .collect();
        self.gather_elements(Shape(dims), &src, OP)
    }

    /// Concatenates tensors of one dtype and device along `dim`.
    pub fn cat(tensors: &[&Tensor], dim: usize) -> Result<Tensor> {
        const OP: &str = "Tensor::cat";
        let first = tensors.first().ok_or_else(|| arg_err!(OP, "no tensors given"))?;
        let rank = first.rank();
        if dim >= rank {
            return Err(shape_err!(OP, "dim {dim} out of range for shape {}", first.shape));
        }
        let mut dims = first.dims().to_vec();
        dims[dim] = 0;
        for t in tensors {
            let compatible = t.rank() == rank && (0..rank).all(|d| d == dim || t.dims()[d] == first.dims()[d]);
            if !compatible {
                return Err(shape_err!(OP, "cannot concatenate {} with {} along dim {dim}", first.shape, t.shape));
            }
            if t.dtype() != first.dtype() {
                return Err(arg_err!(OP, "dtypes differ: {:?} and {:?}", first.dtype(), t.dtype()));
            }
            if t.device() != first.device() {
                return Err(Error::DeviceMismatch { op: OP, a: first.device(), b: t.device() });
            }
            dims[dim] += t.dims()[dim];
        }
        if let Storage::Cuda(_) = &*first.storage {
            return crate::cuda::tensor::cat(tensors, dim, OP);
        }
        let outer: usize = first.dims()[..dim].iter().product();
        let inner: usize = first.dims()[dim + 1..].iter().product();
        macro_rules! gather {
            ($variant:ident) => {{
                let parts: Vec<_> = tensors
                    .iter()
                    .map(|t| match &*t.storage {
                        Storage::Cpu(CpuStorage::$variant(v)) => &v[t.offset..t.offset + t.numel()],
                        _ => unreachable!("dtypes and devices checked above"),
                    })
                    .collect();
                let mut out = Vec::with_capacity(Shape(dims.clone()).numel());
                for o in 0..outer {
                    for (p, t) in parts.iter().zip(tensors) {
                        let block = t.dims()[dim] * inner;
                        out.extend_from_slice(&p[o * block..(o + 1) * block]);
                    }
                }
                CpuStorage::$variant(out)
            }};
        }
        let data = match first.dtype() {
            DType::F32 => gather!(F32),
            DType::BF16 => gather!(BF16),
            DType::I32 => gather!(I32),
        };
        Tensor::from_cpu(data, Shape(dims), OP)
    }

    /// Reorders dims (a copy): output dim `i` is input dim `perm[i]`.
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        const OP: &str = "Tensor::permute";
        let rank = self.rank();
        let mut seen = vec![false; rank];
        if perm.len() != rank || perm.iter().any(|&p| p >= rank || std::mem::replace(&mut seen[p], true)) {
            return Err(arg_err!(OP, "{perm:?} is not a permutation of the dims of {}", self.shape));
        }
        let in_dims = self.dims();
        let out_dims: Vec<usize> = perm.iter().map(|&p| in_dims[p]).collect();
        let mut in_strides = vec![1usize; rank];
        for d in (0..rank.saturating_sub(1)).rev() {
            in_strides[d] = in_strides[d + 1] * in_dims[d + 1];
        }
        let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
        if let Storage::Cuda(_) = &*self.storage {
            return crate::cuda::tensor::gather_strided(self, &crate::cuda::strided::permute(in_dims, perm), OP);
        }
        let mut src = Vec::with_capacity(self.numel());
        let mut idx = vec![0usize; rank];
        let mut pos = 0usize;
        for _ in 0..self.numel() {
            src.push(pos);
            // Odometer increment over the output index, tracking the source offset.
            for d in (0..rank).rev() {
                idx[d] += 1;
                pos += strides[d];
                if idx[d] < out_dims[d] {
                    break;
                }
                pos -= strides[d] * out_dims[d];
                idx[d] = 0;
            }
        }
        self.gather_elements(Shape(out_dims), &src, OP)
    }

    /// Swaps two dims (a copy).
    pub fn transpose(&self, a: usize, b: usize) -> Result<Tensor> {
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        if a >= perm.len() || b >= perm.len() {
            return Err(shape_err!("Tensor::transpose", "dims ({a}, {b}) out of range for {}", self.shape));
        }
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// A new tensor of `shape` whose element `i` is this tensor's element `src[i]`.
    /// Layout changes compute their index map once and share this one copy loop.
    fn gather_elements(&self, shape: Shape, src: &[usize], op: &'static str) -> Result<Tensor> {
        let base = self.offset;
        let data = match &*self.storage {
            Storage::Cpu(CpuStorage::F32(v)) => CpuStorage::F32(src.iter().map(|&i| v[base + i]).collect()),
            Storage::Cpu(CpuStorage::BF16(v)) => CpuStorage::BF16(src.iter().map(|&i| v[base + i]).collect()),
            Storage::Cpu(CpuStorage::I32(v)) => CpuStorage::I32(src.iter().map(|&i| v[base + i]).collect()),
            Storage::Cuda(_) => unreachable!("CUDA layout changes take crate::cuda::tensor's strided copy"),
        };
        Tensor::from_cpu(data, shape, op)
    }
}
