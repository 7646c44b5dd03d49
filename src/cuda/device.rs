//! One CUDA device: context, the stream every op runs on, the module holding the
//! embedded kernels, memory, copies, and errors that say which op failed.
//!
//! Memory: allocations come from a stream-ordered pool of the handle's own
//! (`cuMemPoolCreate`, `cuMemAllocFromPoolAsync`) with its release threshold
//! raised to "never", so freed blocks stay cached in the pool and are reused by
//! the next allocation of the stream, without a `cudaFree` / `cudaMalloc`
//! round trip: the same effect as PyTorch's caching allocator, with the driver
//! doing the bookkeeping. The pool reports bytes in use, its high-water mark
//! and bytes reserved ([`CudaDevice::memory`]); being the handle's own, those
//! figures count only what was allocated through this handle, never another
//! handle's work on the same GPU (another test, another thread's isolated
//! device).
//!
//! Accounting: every copy, synchronisation, launch, GEMM and allocation made
//! through the handle is counted per phase ([`CudaDevice::accounting`],
//! `super::accounting`).
//!
//! Handles: [`shared`] gives the process-wide handle that tensors on
//! `Device::Cuda(i)` use; [`isolated`] gives the calling thread a fresh handle
//! of its own for a while (its own pool and counters), which is how a test
//! measures exactly the work it did while other tests run in parallel.
//!
//! One stream, in order: cudarc's per-buffer event tracking is switched off
//! because nothing here runs on a second stream.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, CudaView, DevicePtr, DevicePtrMut, DeviceRepr,
    DriverError, ValidAsZeroBits, sys,
};
use cudarc::nvrtc::Ptx;

use super::accounting::{Accounting, Counters, Phase};
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
unsafe impl DeviceRepr for params::ActialPagedKv {}
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

thread_local! {
    /// Handles [`isolated`] installed on this thread, innermost last.
    static ISOLATED: RefCell<Vec<Arc<CudaDevice>>> = const { RefCell::new(Vec::new()) };
}

/// The handle of device `ordinal` that tensors created on this thread use: the
/// innermost [`isolated`] one, else the process-wide one (opened on first use;
/// one context, one stream, one pool).
pub fn shared(ordinal: usize) -> Result<Arc<CudaDevice>> {
    let own = ISOLATED.with(|s| s.borrow().iter().rev().find(|d| d.ordinal == ordinal).cloned());
    if let Some(d) = own {
        return Ok(d);
    }
    static OPEN: OnceLock<Mutex<HashMap<usize, Arc<CudaDevice>>>> = OnceLock::new();
    let mut map = OPEN.get_or_init(Default::default).lock().expect("device registry lock");
    if let Some(d) = map.get(&ordinal) {
        return Ok(d.clone());
    }
    let d = CudaDevice::open(ordinal)?;
    map.insert(ordinal, d.clone());
    Ok(d)
}

/// A fresh handle of device `ordinal` (its own pool and counters) that
/// [`shared`] returns on this thread until the guard drops. Tensors created
/// meanwhile keep it; their memory stays valid after the guard is gone.
/// Work on other threads never shows in its figures.
pub fn isolated(ordinal: usize) -> Result<Isolated> {
    let dev = CudaDevice::open(ordinal)?;
    ISOLATED.with(|s| s.borrow_mut().push(dev.clone()));
    Ok(Isolated { dev, _same_thread: PhantomData })
}

/// See [`isolated`].
#[must_use = "the isolation ends when this guard drops"]
pub struct Isolated {
    dev: Arc<CudaDevice>,
    _same_thread: PhantomData<*const ()>,
}

impl Isolated {
    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.dev
    }
}

impl std::ops::Deref for Isolated {
    type Target = CudaDevice;
    fn deref(&self) -> &CudaDevice {
        &self.dev
    }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        ISOLATED.with(|s| {
            let mut s = s.borrow_mut();
            if let Some(i) = s.iter().rposition(|d| Arc::ptr_eq(d, &self.dev)) {
                s.remove(i);
            }
        });
    }
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
    counters: Mutex<[Counters; Phase::COUNT]>,
    /// Every allocation's phase and size while logging is on (tests that
    /// look for a tensor shape, e.g. no `[tokens, vocab]` buffer).
    allocation_log: Mutex<Option<Vec<(Phase, u64)>>>,
    name: String,
    compute_capability: (i32, i32),
}

// SAFETY: `pool` is a driver handle used only through thread-safe driver calls;
// everything else is Send + Sync already.
unsafe impl Send for CudaDevice {}
unsafe impl Sync for CudaDevice {}

impl CudaDevice {
    /// Opens a new handle of device `ordinal`: primary context, default stream,
    /// kernels loaded, a memory pool of its own set to cache freed blocks.
    pub fn open(ordinal: usize) -> Result<Arc<CudaDevice>> {
        let device = Device::Cuda(ordinal);
        let unavailable = |why: String| Error::DeviceUnavailable { device, why };
        let count = device_count().map_err(unavailable)?;
        if ordinal >= count {
            return Err(unavailable(format!("this machine has {count} CUDA device(s)")));
        }
        let (ctx, module) = context_and_module(ordinal).map_err(unavailable)?;
        let stream = ctx.default_stream();
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let compute_capability = ctx.compute_capability().map_err(|e| unavailable(describe(&e)))?;
        let pool = create_pool(&ctx).map_err(|e| unavailable(format!("creating the memory pool: {}", describe(&e))))?;
        Ok(Arc::new(CudaDevice {
            ordinal,
            ctx,
            stream,
            module,
            functions: Mutex::new(HashMap::new()),
            blas: OnceLock::new(),
            pool,
            counters: Mutex::new([Counters::default(); Phase::COUNT]),
            allocation_log: Mutex::new(None),
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
                phase: super::nvtx::current_phase().name(),
                requested: requested.unwrap_or(0),
                free,
                total,
                in_use: m.in_use as usize,
                reserved: m.reserved as usize,
                peak: m.peak as usize,
            };
        }
        Error::Cuda { op: op.to_string(), msg: describe(&e) }
    }

    /// `n` elements from the pool, contents unset. `n == 0` gets a one-element
    /// allocation behind a zero-length slice: `cuMemAllocAsync(0)` returns
    /// `CUDA_ERROR_INVALID_VALUE` on some drivers (cudarc issue #194), and empty
    /// tensors (a prompt without images, a step without CoT samples) are legal.
    fn raw_alloc<T: DeviceRepr>(&self, n: usize, op: &str) -> Result<CudaSlice<T>> {
        let bytes = n.max(1) * size_of::<T>();
        self.ctx.bind_to_thread().map_err(|e| self.error(op, None, e))?;
        let mut ptr: sys::CUdeviceptr = 0;
        // SAFETY: the pool is this handle's, the stream the device's; the
        // returned block is owned by the slice below, which frees it on drop
        // (cuMemFreeAsync returns it to the pool it came from).
        unsafe { sys::cuMemAllocFromPoolAsync(&mut ptr, bytes, self.pool, self.stream.cu_stream()) }
            .result()
            .map_err(|e| self.error(op, Some(bytes), e))?;
        self.count(|c| {
            c.allocs += 1;
            c.alloc_bytes += bytes as u64;
            c.largest_alloc = c.largest_alloc.max(bytes as u64);
        });
        if let Some(log) = self.allocation_log.lock().expect("allocation log lock").as_mut() {
            log.push((super::nvtx::current_phase(), bytes as u64));
        }
        // SAFETY: callers either fill the buffer before it is read (`uninit`,
        // `upload`) or zero it (`zeros`); the zero-length slice is never read.
        Ok(unsafe { self.stream.upgrade_device_ptr(ptr, n) })
    }

    /// `n` zeroed elements.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, n: usize, op: &str) -> Result<CudaSlice<T>> {
        let mut d = self.raw_alloc::<T>(n, op)?;
        self.memset_zeros(&mut d, op)?;
        Ok(d)
    }

    /// Zeroes a buffer (or a window of one).
    pub fn memset_zeros<T: DeviceRepr + ValidAsZeroBits, D: DevicePtrMut<T>>(&self, d: &mut D, op: &str) -> Result<()> {
        if d.len() == 0 {
            return Ok(());
        }
        self.count(|c| c.memsets += 1);
        self.stream.memset_zeros(d).map_err(|e| self.error(op, None, e))
    }

    /// `n` uninitialised elements, for outputs a kernel writes in full.
    pub fn uninit<T: DeviceRepr>(&self, n: usize, op: &str) -> Result<CudaSlice<T>> {
        self.raw_alloc::<T>(n, op)
    }

    /// Copies `host` to a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, host: &[T], op: &str) -> Result<CudaSlice<T>> {
        let mut d = self.raw_alloc::<T>(host.len(), op)?;
        if !host.is_empty() {
            self.count(|c| {
                c.h2d_copies += 1;
                c.h2d_bytes += size_of_val(host) as u64;
            });
            self.stream.memcpy_htod(host, &mut d).map_err(|e| self.error(op, None, e))?;
        }
        Ok(d)
    }

    /// Copies a device buffer back (waits for the stream).
    pub fn download<T: DeviceRepr + Default + Clone>(&self, d: &CudaSlice<T>, op: &str) -> Result<Vec<T>> {
        if d.is_empty() {
            return Ok(Vec::new());
        }
        self.download_view(&d.as_view(), op)
    }

    /// Copies a window of a device buffer back (waits for the stream).
    pub fn download_view<T: DeviceRepr + Default + Clone>(&self, d: &CudaView<'_, T>, op: &str) -> Result<Vec<T>> {
        if d.is_empty() {
            return Ok(Vec::new());
        }
        self.count(|c| {
            c.d2h_copies += 1;
            c.d2h_bytes += (d.len() * size_of::<T>()) as u64;
            c.syncs += 1;
        });
        self.stream.clone_dtoh(d).map_err(|e| self.error(op, None, e))
    }

    /// A new buffer holding a copy of `src` (device to device, from this pool).
    pub fn duplicate<T: DeviceRepr>(&self, src: &CudaView<'_, T>, op: &str) -> Result<CudaSlice<T>> {
        let mut d = self.raw_alloc::<T>(src.len(), op)?;
        self.copy(src, &mut d, op)?;
        Ok(d)
    }

    /// Copies `src` into `dst` (same length) on the device.
    pub fn copy<T: DeviceRepr, S: DevicePtr<T>, D: DevicePtrMut<T>>(
        &self,
        src: &S,
        dst: &mut D,
        op: &str,
    ) -> Result<()> {
        if src.len() == 0 {
            return Ok(());
        }
        self.count(|c| c.d2d_bytes += (src.len() * size_of::<T>()) as u64);
        self.stream.memcpy_dtod(src, dst).map_err(|e| self.error(op, Some(src.len() * size_of::<T>()), e))
    }

    /// Waits for all queued work; a kernel fault surfaces here, named by `op`.
    pub fn synchronize(&self, op: &str) -> Result<()> {
        self.count(|c| c.syncs += 1);
        self.stream.synchronize().map_err(|e| self.error(op, None, e))
    }

    /// Adds to the counters of the phase open on this thread.
    fn count(&self, f: impl FnOnce(&mut Counters)) {
        let phase = super::nvtx::current_phase();
        let mut c = self.counters.lock().expect("device counters lock");
        f(&mut c[phase.index()]);
    }

    /// Counts one kernel launch (the `launch!` macro calls this).
    pub(crate) fn count_launch(&self) {
        self.count(|c| c.launches += 1);
    }

    /// Counts one cuBLASLt matmul.
    pub(crate) fn count_gemm(&self) {
        self.count(|c| c.gemms += 1);
    }

    /// What this handle did since it opened or since [`CudaDevice::reset_accounting`],
    /// per phase, and its pool's figures.
    pub fn accounting(&self) -> Accounting {
        let phases = *self.counters.lock().expect("device counters lock");
        let m = self.memory();
        Accounting { phases, pool_peak_bytes: m.peak, pool_reserved_bytes: m.reserved }
    }

    /// Zeroes the counters and restarts the pool's high-water mark, e.g. at
    /// the start of a training step.
    pub fn reset_accounting(&self) {
        *self.counters.lock().expect("device counters lock") = [Counters::default(); Phase::COUNT];
        self.reset_peak();
    }

    /// Starts (or restarts, empty) a log of every allocation's phase and size.
    pub fn start_allocation_log(&self) {
        *self.allocation_log.lock().expect("allocation log lock") = Some(Vec::new());
    }

    /// The allocations logged since [`CudaDevice::start_allocation_log`]
    /// (logging stops).
    pub fn take_allocation_log(&self) -> Vec<(Phase, u64)> {
        self.allocation_log.lock().expect("allocation log lock").take().unwrap_or_default()
    }

    /// [`CudaDevice::accounting`], then [`CudaDevice::reset_accounting`].
    pub fn take_accounting(&self) -> Accounting {
        let a = self.accounting();
        self.reset_accounting();
        a
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

impl Drop for CudaDevice {
    fn drop(&mut self) {
        // Queued work may still read this pool's blocks, and the cuBLASLt
        // workspace is one of them: wait, return the workspace, then destroy
        // the pool only if nothing is outstanding. Blocks can outlive their
        // handle (an optimizer's state dropped after the model's last tensor),
        // and the driver's deferred destruction of a pool with blocks still
        // out is a path we do not take: the first run on an H200 crashed or
        // hung after handles closed that way. Such a pool stays, releasing
        // each block to the driver as it is freed (release threshold 0).
        let _ = self.stream.synchronize();
        drop(self.blas.take());
        let _ = self.stream.synchronize();
        if self.memory().in_use == 0 {
            // SAFETY: the pool was created in `open`, is destroyed once, and
            // no block of it is allocated.
            let _ = unsafe { sys::cuMemPoolDestroy(self.pool) };
        } else {
            let mut zero = 0u64;
            // SAFETY: RELEASE_THRESHOLD takes a u64; trimming frees cached
            // blocks only.
            unsafe {
                let _ = sys::cuMemPoolSetAttribute(
                    self.pool,
                    sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                    &mut zero as *mut u64 as *mut c_void,
                );
                let _ = sys::cuMemPoolTrimTo(self.pool, 0);
            }
        }
    }
}

/// The device's primary context and the loaded kernels, one of each per
/// device for the whole process. Handles share them: retaining and releasing
/// the primary context per handle would destroy it whenever the last handle
/// closed (the driver resets a primary context at refcount 0), and cuBLASLt
/// keeps per-context state that must not see its context come and go.
fn context_and_module(ordinal: usize) -> std::result::Result<(Arc<CudaContext>, Arc<CudaModule>), String> {
    type Loaded = (Arc<CudaContext>, Arc<CudaModule>);
    static LOADED: OnceLock<Mutex<HashMap<usize, Loaded>>> = OnceLock::new();
    let mut map = LOADED.get_or_init(Default::default).lock().expect("context registry lock");
    if let Some((ctx, module)) = map.get(&ordinal) {
        return Ok((ctx.clone(), module.clone()));
    }
    let ctx = CudaContext::new(ordinal).map_err(|e| describe(&e))?;
    // SAFETY: called before any buffer of this context exists; every handle
    // orders its work on the context's one (default) stream.
    unsafe { ctx.disable_event_tracking() };
    let module = ctx.load_module(Ptx::from_binary(FATBIN.to_vec())).map_err(|e| {
        format!(
            "loading the embedded kernels failed ({}); the fatbin holds sm_80 and sm_90a code and compute_80 \
             PTX, which needs a driver for CUDA 13.0 or newer",
            describe(&e)
        )
    })?;
    map.insert(ordinal, (ctx.clone(), module.clone()));
    Ok((ctx, module))
}

/// A device-memory pool of its own for a new handle, keeping freed blocks cached.
fn create_pool(ctx: &CudaContext) -> std::result::Result<sys::CUmemoryPool, DriverError> {
    // SAFETY: an all-zero CUmemPoolProps is valid (no handle types, no size
    // cap); the fields set below are the documented ones for device memory.
    let mut props: sys::CUmemPoolProps = unsafe { std::mem::zeroed() };
    props.allocType = sys::CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED;
    props.handleTypes = sys::CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_NONE;
    props.location =
        sys::CUmemLocation { type_: sys::CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE, id: ctx.cu_device() };
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    // SAFETY: plain driver calls on the context's device; the value points to a
    // u64 as CU_MEMPOOL_ATTR_RELEASE_THRESHOLD requires.
    unsafe {
        ctx.bind_to_thread()?;
        sys::cuMemPoolCreate(&mut pool, &props).result()?;
        let mut keep = u64::MAX;
        let set = sys::cuMemPoolSetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            &mut keep as *mut u64 as *mut c_void,
        )
        .result();
        if let Err(e) = set {
            let _ = sys::cuMemPoolDestroy(pool);
            return Err(e);
        }
    }
    Ok(pool)
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
        $dev.count_launch();
        let mut b = $dev.stream().launch_builder(&f);
        $( b.arg($arg); )*
        // SAFETY: the arguments match the kernel's C signature in cuda/ in number,
        // order and type, and the wrappers checked every buffer's length.
        unsafe { b.launch($cfg) }.map(|_| ()).map_err(|e| $dev.error(&format!("{} {}", $name, $shapes), None, e))
    }};
}
pub(crate) use launch;
