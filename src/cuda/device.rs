//! One CUDA device: context, the stream every op runs on, the module holding the
//! embedded kernels, memory, copies, and errors that say which op failed.
//!
//! Memory: allocations come from the device's stream-ordered pool
//! (`cuMemAllocAsync`) with its release threshold raised to "never", so freed
//! blocks stay cached in the pool and are reused by the next allocation of the
//! stream, without a `cudaFree` / `cudaMalloc` round trip: the same effect as
//! PyTorch's caching allocator, with the driver doing the bookkeeping. The pool
//! reports bytes in use, its high-water mark and bytes reserved
//! ([`CudaDevice::memory`]).
//!
//! One stream, in order: cudarc's per-buffer event tracking is switched off
//! because nothing here runs on a second stream.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr, DriverError, ValidAsZeroBits,
    sys,
};
use cudarc::nvrtc::Ptx;

use crate::error::{Error, Result};
use crate::tensor::Device;

/// Every kernel of `cuda/*.cu`, built by build.rs.
static FATBIN: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/actial_kernels.fatbin"));

/// The kernel parameter structs of `cuda/params.h` (bindgen).
#[allow(non_camel_case_types, non_snake_case, non_upper_case_globals, dead_code, clippy::all)]
pub mod params {
    include!(concat!(env!("OUT_DIR"), "/cuda_params.rs"));
}

// SAFETY: plain #[repr(C)] structs of scalars and device pointers, passed by value
// or copied to the device; the kernels read them with the same layout (one header).
unsafe impl DeviceRepr for params::ActialTensorSlot {}
unsafe impl DeviceRepr for params::ActialAdamWParams {}
unsafe impl DeviceRepr for params::ActialSamplingParams {}
unsafe impl DeviceRepr for params::ActialAttentionParams {}
unsafe impl DeviceRepr for params::ActialStridedCopy {}

/// How many CUDA devices this machine has, or why none can be used.
pub fn device_count() -> std::result::Result<usize, String> {
    super::emulated::install_if_requested()?;
    // SAFETY: only probes whether the driver library can be loaded.
    if !unsafe { sys::is_culib_present() } {
        return Err("no NVIDIA driver found (libcuda.so could not be loaded)".into());
    }
    match CudaContext::device_count() {
        Ok(0) => Err("the NVIDIA driver reports no CUDA device".into()),
        Ok(n) => Ok(n as usize),
        Err(e) => Err(format!("the NVIDIA driver failed to initialise: {}", describe(&e))),
    }
}

/// The process-wide handle of device `ordinal`, opened on first use. Tensors on
/// `Device::Cuda(i)` all share it (one context, one stream, one pool).
pub fn shared(ordinal: usize) -> Result<Arc<CudaDevice>> {
    static OPEN: OnceLock<Mutex<HashMap<usize, Arc<CudaDevice>>>> = OnceLock::new();
    let mut map = OPEN.get_or_init(Default::default).lock().expect("device registry lock");
    if let Some(d) = map.get(&ordinal) {
        return Ok(d.clone());
    }
    let d = CudaDevice::open(ordinal)?;
    map.insert(ordinal, d.clone());
    Ok(d)
}

/// `CUDA_ERROR_NAME: description` for a driver error.
pub fn describe(e: &DriverError) -> String {
    let name = e.error_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|_| format!("{:?}", e.0));
    let text = e.error_string().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    format!("{name}: {text}")
}

/// Bytes held by the device's memory pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes in live allocations.
    pub in_use: u64,
    /// High-water mark of `in_use` since the device opened or [`CudaDevice::reset_peak`].
    pub peak: u64,
    /// Bytes the pool holds from the driver (in use + cached for reuse).
    pub reserved: u64,
}

pub struct CudaDevice {
    ordinal: usize,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    module: Arc<CudaModule>,
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
    blas: OnceLock<std::result::Result<super::gemm::Lt, String>>,
    pool: sys::CUmemoryPool,
    name: String,
    compute_capability: (i32, i32),
}

// SAFETY: `pool` is a driver handle used only through thread-safe driver calls;
// everything else is Send + Sync already.
unsafe impl Send for CudaDevice {}
unsafe impl Sync for CudaDevice {}

impl CudaDevice {
    /// Opens device `ordinal`: primary context, default stream, kernels loaded,
    /// the memory pool set to cache freed blocks.
    pub fn open(ordinal: usize) -> Result<Arc<CudaDevice>> {
        let device = Device::Cuda(ordinal);
        let unavailable = |why: String| Error::DeviceUnavailable { device, why };
        let count = device_count().map_err(unavailable)?;
        if ordinal >= count {
            return Err(unavailable(format!("this machine has {count} CUDA device(s)")));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| unavailable(describe(&e)))?;
        // SAFETY: called before any buffer exists; one stream orders everything.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let compute_capability = ctx.compute_capability().map_err(|e| unavailable(describe(&e)))?;
        let module = ctx.load_module(Ptx::from_binary(FATBIN.to_vec())).map_err(|e| {
            unavailable(format!(
                "loading the embedded kernels failed ({}); the fatbin holds sm_80 and sm_90a code and compute_80 \
                 PTX, which needs a driver for CUDA 13.0 or newer",
                describe(&e)
            ))
        })?;
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        // SAFETY: plain driver calls on a valid device; the value points to a u64 as
        // CU_MEMPOOL_ATTR_RELEASE_THRESHOLD requires.
        unsafe {
            sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device())
                .result()
                .map_err(|e| unavailable(describe(&e)))?;
            let mut keep = u64::MAX;
            sys::cuMemPoolSetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                &mut keep as *mut u64 as *mut c_void,
            )
            .result()
            .map_err(|e| unavailable(describe(&e)))?;
        }
        Ok(Arc::new(CudaDevice {
            ordinal,
            ctx,
            stream,
            module,
            functions: Mutex::new(HashMap::new()),
            blas: OnceLock::new(),
            pool,
            name,
            compute_capability,
        }))
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
    }
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The kernel `name` from the embedded module (looked up once, then cached).
    pub fn function(&self, name: &'static str) -> Result<CudaFunction> {
        let mut map = self.functions.lock().expect("kernel cache lock");
        if let Some(f) = map.get(name) {
            return Ok(f.clone());
        }
        let f = self.module.load_function(name).map_err(|e| Error::Cuda {
            op: name.to_string(),
            msg: format!("kernel not in the module: {}", describe(&e)),
        })?;
        map.insert(name, f.clone());
        Ok(f)
    }

    /// The cuBLASLt handle and workspace (created on first use).
    pub(crate) fn blas(&self) -> Result<&super::gemm::Lt> {
        self.blas
            .get_or_init(|| super::gemm::Lt::new(self))
            .as_ref()
            .map_err(|msg| Error::Cuda { op: "cublasLt".into(), msg: msg.clone() })
    }

    /// Maps a driver error of `op` to the crate's error; out-of-memory says what
    /// was requested and what is free.
    pub fn error(&self, op: &str, requested: Option<usize>, e: DriverError) -> Error {
        if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            let (free, total) = self.ctx.mem_get_info().unwrap_or((0, 0));
            let m = self.memory();
            return Error::OutOfMemory {
                op: op.to_string(),
                requested: requested.unwrap_or(0),
                free,
                total,
                in_use: m.in_use as usize,
                reserved: m.reserved as usize,
            };
        }
        Error::Cuda { op: op.to_string(), msg: describe(&e) }
    }

    /// `n` elements from the pool, contents unset. `n == 0` gets a one-element
    /// allocation behind a zero-length slice: `cuMemAllocAsync(0)` returns
    /// `CUDA_ERROR_INVALID_VALUE` on some drivers (cudarc issue #194), and empty
    /// tensors (a prompt without images, a step without CoT samples) are legal.
    fn raw_alloc<T: DeviceRepr>(&self, n: usize, op: &str) -> Result<CudaSlice<T>> {
        let err = |e| self.error(op, Some(n * size_of::<T>()), e);
        // SAFETY: callers either fill the buffer before it is read (`uninit`,
        // `upload`) or zero it (`zeros`); the zero-length slice is never read.
        unsafe {
            if n > 0 {
                return self.stream.alloc::<T>(n).map_err(err);
            }
            let one = self.stream.alloc::<T>(1).map_err(err)?;
            // The zero-length slice owns the one-element block and frees it on drop.
            Ok(self.stream.upgrade_device_ptr(one.leak(), 0))
        }
    }

    /// `n` zeroed elements.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, n: usize, op: &str) -> Result<CudaSlice<T>> {
        let mut d = self.raw_alloc::<T>(n, op)?;
        if n > 0 {
            self.stream.memset_zeros(&mut d).map_err(|e| self.error(op, None, e))?;
        }
        Ok(d)
    }

    /// `n` uninitialised elements, for outputs a kernel writes in full.
    pub fn uninit<T: DeviceRepr>(&self, n: usize, op: &str) -> Result<CudaSlice<T>> {
        self.raw_alloc::<T>(n, op)
    }

    /// Copies `host` to a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, host: &[T], op: &str) -> Result<CudaSlice<T>> {
        let mut d = self.raw_alloc::<T>(host.len(), op)?;
        if !host.is_empty() {
            self.stream.memcpy_htod(host, &mut d).map_err(|e| self.error(op, None, e))?;
        }
        Ok(d)
    }

    /// Copies a device buffer back (waits for the stream).
    pub fn download<T: DeviceRepr + Default + Clone>(&self, d: &CudaSlice<T>, op: &str) -> Result<Vec<T>> {
        if d.is_empty() {
            return Ok(Vec::new());
        }
        self.stream.clone_dtoh(d).map_err(|e| self.error(op, None, e))
    }

    /// Waits for all queued work; a kernel fault surfaces here, named by `op`.
    pub fn synchronize(&self, op: &str) -> Result<()> {
        self.stream.synchronize().map_err(|e| self.error(op, None, e))
    }

    /// The raw device address of a buffer, for parameter structs.
    pub fn address<T>(&self, d: &CudaSlice<T>) -> u64 {
        d.device_ptr(&self.stream).0
    }

    fn pool_attr(&self, attr: sys::CUmemPool_attribute) -> u64 {
        let mut v = 0u64;
        // SAFETY: the USED/RESERVED attributes write one u64.
        let _ = unsafe { sys::cuMemPoolGetAttribute(self.pool, attr, &mut v as *mut u64 as *mut c_void) };
        v
    }

    pub fn memory(&self) -> MemoryStats {
        use sys::CUmemPool_attribute as A;
        MemoryStats {
            in_use: self.pool_attr(A::CU_MEMPOOL_ATTR_USED_MEM_CURRENT),
            peak: self.pool_attr(A::CU_MEMPOOL_ATTR_USED_MEM_HIGH),
            reserved: self.pool_attr(A::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT),
        }
    }

    /// Restarts the high-water mark (e.g. per training phase).
    pub fn reset_peak(&self) {
        let mut zero = 0u64;
        // SAFETY: USED_MEM_HIGH may only be reset to 0, which this does.
        let _ = unsafe {
            sys::cuMemPoolSetAttribute(
                self.pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                &mut zero as *mut u64 as *mut c_void,
            )
        };
    }
}

/// Launch geometry helpers shared by the family wrappers.
pub(crate) fn grid_for(n: usize, threads: u32) -> cudarc::driver::LaunchConfig {
    cudarc::driver::LaunchConfig {
        grid_dim: (grid_blocks(n, threads), 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Blocks of a grid-stride launch over `n` elements: enough to fill an H100
/// several times over, no more (shared with the CPU emulator).
pub fn grid_blocks(n: usize, threads: u32) -> u32 {
    n.div_ceil(threads as usize).clamp(1, 132 * 32) as u32
}

/// One block of `threads` per row.
pub(crate) fn per_row(rows: usize, threads: u32) -> cudarc::driver::LaunchConfig {
    cudarc::driver::LaunchConfig {
        grid_dim: (rows.max(1) as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Errors unless a buffer holds exactly `expected` elements; names op and buffer.
pub(crate) fn check_len(op: &'static str, what: &str, len: usize, expected: usize) -> Result<()> {
    if len != expected {
        return Err(crate::shape_err!(op, "{what} has {len} elements, expected {expected}"));
    }
    Ok(())
}

/// Launches kernel `$name` with the given arguments on the device's stream; a
/// launch error names the kernel and `$shapes`.
macro_rules! launch {
    ($dev:expr, $name:expr, $cfg:expr, $shapes:expr; $($arg:expr),* $(,)?) => {{
        use cudarc::driver::PushKernelArg as _;
        let f = $dev.function($name)?;
        let mut b = $dev.stream().launch_builder(&f);
        $( b.arg($arg); )*
        // SAFETY: the arguments match the kernel's C signature in cuda/ in number,
        // order and type, and the wrappers checked every buffer's length.
        unsafe { b.launch($cfg) }.map(|_| ()).map_err(|e| $dev.error(&format!("{} {}", $name, $shapes), None, e))
    }};
}
pub(crate) use launch;
