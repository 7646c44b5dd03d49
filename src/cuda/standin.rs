//! The CUDA device in a build without the kernels (build.rs found no nvcc):
//! the device handle and device storage as types that cannot be created, so
//! `Tensor` and the ops keep one code path for both builds. Opening a device
//! is the one way in, and it says the build lacks the kernels. (As candle's
//! dummy backend: the real modules are `device.rs` and `tensor.rs`.)

pub mod device {
    use std::sync::Arc;

    use crate::error::{Error, Result};
    use crate::tensor::Device;

    /// No value of this type exists: no device can be opened.
    #[derive(Debug)]
    pub enum CudaDevice {}

    impl CudaDevice {
        pub fn synchronize(&self, _op: &'static str) -> Result<()> {
            match *self {}
        }
    }

    /// Always the error that says this build has no CUDA kernels.
    pub fn shared(ordinal: usize) -> Result<Arc<CudaDevice>> {
        Err(Error::DeviceUnavailable {
            device: Device::Cuda(ordinal),
            why: crate::cuda::build_info::NOT_BUILT.to_string(),
        })
    }
}

pub mod tensor {
    use std::ops::Range;

    use super::device::shared;
    use crate::cuda::strided::CopyPlan;
    use crate::error::{Error, Result};
    use crate::tensor::{CpuStorage, DType, Device, Tensor};

    /// No value of this type exists: a tensor is never on CUDA in this build.
    #[derive(Clone, Debug)]
    pub enum CudaStorage {}

    impl CudaStorage {
        pub fn ordinal(&self) -> usize {
            match *self {}
        }
        pub fn dtype(&self) -> DType {
            match *self {}
        }
        pub fn len(&self) -> usize {
            match *self {}
        }
        pub fn is_empty(&self) -> bool {
            match *self {}
        }
        pub fn upload(_host: &CpuStorage, ordinal: usize) -> Result<CudaStorage> {
            Err(shared(ordinal).expect_err("no device opens"))
        }
        pub fn zeros(ordinal: usize, _dtype: DType, _n: usize) -> Result<CudaStorage> {
            Err(shared(ordinal).expect_err("no device opens"))
        }
        pub fn download(&self, _range: Range<usize>) -> Result<CpuStorage> {
            match *self {}
        }
        pub fn copy_range(&self, _range: Range<usize>, _op: &'static str) -> Result<CudaStorage> {
            match *self {}
        }
    }

    /// As the real one: the error for a host-only path given a device tensor.
    pub fn host_only(op: &'static str, what: &'static str, device: Device) -> Error {
        crate::arg_err!(op, "{what} is on {device}; this path reads host memory (move it with to_device(Device::Cpu))")
    }

    fn no_device() -> Error {
        shared(0).expect_err("no device opens")
    }

    pub fn cast(_t: &Tensor, _dtype: DType) -> Result<Tensor> {
        Err(no_device())
    }
    pub fn gather_strided(_t: &Tensor, _plan: &CopyPlan, _op: &'static str) -> Result<Tensor> {
        Err(no_device())
    }
    pub fn cat(_parts: &[&Tensor], _dim: usize, _op: &'static str) -> Result<Tensor> {
        Err(no_device())
    }
}
