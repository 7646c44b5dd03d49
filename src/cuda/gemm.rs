//! Plain GEMMs through cuBLASLt: bf16 operands, f32 accumulation, bf16 or f32
//! output (f32 for gradient accumulation into master-precision buffers), an
//! optional bias epilogue. Row-major in the interface, like `cpu::matmul`; the
//! column-major translation happens once, here.
//!
//! Row-major `C[m, n]` is column-major `Cᵀ[n, m] = op(B)ᵀ · op(A)ᵀ`, so cuBLASLt
//! gets B as its first operand and A as its second, with the same transpose
//! flags, and the bias (one value per output column of C) becomes the per-row
//! bias of the column-major epilogue.

use std::ffi::c_void;

use cudarc::cublaslt::{result as lt, sys};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};
use half::bf16;

use super::device::{CudaDevice, check_len};
use crate::error::{Error, Result};

/// cuBLASLt's scratch space; 32 MiB is what cuBLAS recommends for Hopper.
const WORKSPACE_BYTES: usize = 32 << 20;

/// The cuBLASLt handle and its workspace, owned by the device.
pub(crate) struct Lt {
    handle: sys::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
}

// SAFETY: the handle is used only from the device's single stream, under the
// caller's ordering; cuBLASLt handles may be shared across threads.
unsafe impl Send for Lt {}
unsafe impl Sync for Lt {}

impl Lt {
    pub(crate) fn new(dev: &CudaDevice) -> std::result::Result<Lt, String> {
        // SAFETY: only probes whether the library can be loaded.
        if !unsafe { sys::is_culib_present() } {
            return Err(
                "libcublasLt.so.13 could not be loaded (it ships with the CUDA 13 toolkit / driver bundle)".into()
            );
        }
        let handle = lt::create_handle().map_err(|e| format!("cublasLtCreate: {e:?}"))?;
        let workspace = dev.zeros::<u8>(WORKSPACE_BYTES, "cublasLt workspace").map_err(|e| e.to_string())?;
        Ok(Lt { handle, workspace })
    }
}

impl Drop for Lt {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once.
        let _ = unsafe { lt::destroy_handle(self.handle) };
    }
}

/// `C = alpha · op(A) · op(B) + beta · C (+ bias)`, row-major, `op(A): [m, k]`,
/// `op(B): [k, n]`, `C: [m, n]`. A is stored `[m, k]` (or `[k, m]` when
/// `trans_a`), B `[k, n]` (or `[n, k]` when `trans_b`: the `x·Wᵀ` of a linear
/// layer).
#[derive(Clone, Copy, Debug)]
pub struct GemmSpec {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub alpha: f32,
    pub beta: f32,
}

/// The output precision of a GEMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutType {
    Bf16,
    F32,
}

struct Layout(sys::cublasLtMatrixLayout_t);
impl Drop for Layout {
    fn drop(&mut self) {
        // SAFETY: created by create_matrix_layout, destroyed once.
        let _ = unsafe { lt::destroy_matrix_layout(self.0) };
    }
}
struct Desc(sys::cublasLtMatmulDesc_t);
impl Drop for Desc {
    fn drop(&mut self) {
        // SAFETY: as above.
        let _ = unsafe { lt::destroy_matmul_desc(self.0) };
    }
}
struct Pref(sys::cublasLtMatmulPreference_t);
impl Drop for Pref {
    fn drop(&mut self) {
        // SAFETY: as above.
        let _ = unsafe { lt::destroy_matmul_pref(self.0) };
    }
}

/// The row-major GEMM of [`GemmSpec`] into a bf16 `C`; `bias` (length n) is
/// added by the epilogue.
pub fn gemm<A, B, C>(
    dev: &CudaDevice,
    s: GemmSpec,
    a: &A,
    b: &B,
    c: &mut C,
    bias: Option<&CudaSlice<bf16>>,
) -> Result<()>
where
    A: DevicePtr<bf16>,
    B: DevicePtr<bf16>,
    C: DevicePtrMut<bf16>,
{
    let stream = dev.stream();
    let c_len = c.len();
    let (pc, _sc) = c.device_ptr_mut(stream);
    let bias = bias.map(|b| (b.device_ptr(stream).0, b.len()));
    let operands = Operands::new(dev, a, b, (pc, c_len), OutType::Bf16, bias);
    gemm_raw(dev, s, operands)
}

/// The row-major GEMM of [`GemmSpec`] into an f32 `C` (e.g. `beta = 1`: gradient
/// accumulation into f32 master-precision buffers).
pub fn gemm_f32_out<A, B, C>(dev: &CudaDevice, s: GemmSpec, a: &A, b: &B, c: &mut C) -> Result<()>
where
    A: DevicePtr<bf16>,
    B: DevicePtr<bf16>,
    C: DevicePtrMut<f32>,
{
    let stream = dev.stream();
    let c_len = c.len();
    let (pc, _sc) = c.device_ptr_mut(stream);
    let operands = Operands::new(dev, a, b, (pc, c_len), OutType::F32, None);
    gemm_raw(dev, s, operands)
}

/// Raw addresses and lengths of a GEMM's buffers (all on the device's stream).
struct Operands {
    a: (u64, usize),
    b: (u64, usize),
    c: (u64, usize),
    out: OutType,
    bias: Option<(u64, usize)>,
}

impl Operands {
    fn new<A: DevicePtr<bf16>, B: DevicePtr<bf16>>(
        dev: &CudaDevice,
        a: &A,
        b: &B,
        c: (u64, usize),
        out: OutType,
        bias: Option<(u64, usize)>,
    ) -> Operands {
        let stream = dev.stream();
        // One stream and no event tracking: the sync guards have nothing to do.
        let pa = a.device_ptr(stream).0;
        let pb = b.device_ptr(stream).0;
        Operands { a: (pa, a.len()), b: (pb, b.len()), c, out, bias }
    }
}

fn gemm_raw(dev: &CudaDevice, s: GemmSpec, o: Operands) -> Result<()> {
    const OP: &str = "cuda::gemm";
    check_len(OP, "A", o.a.1, s.m * s.k)?;
    check_len(OP, "B", o.b.1, s.k * s.n)?;
    check_len(OP, "C", o.c.1, s.m * s.n)?;
    if let Some(bias) = o.bias {
        check_len(OP, "bias", bias.1, s.n)?;
    }
    if s.m == 0 || s.n == 0 {
        return Ok(());
    }
    let shapes = format!("[{}, {}] x [{}, {}] (trans_a {}, trans_b {})", s.m, s.k, s.k, s.n, s.trans_a, s.trans_b);
    let fail = |what: &str, e: cudarc::cublaslt::result::CublasError| Error::Cuda {
        op: format!("cublasLt {what} {shapes}"),
        msg: format!("{:?}", e.0),
    };
    let ltb = dev.blas()?;
    let (m, n, k) = (s.m as u64, s.n as u64, s.k as u64);
    let bf = sys::cudaDataType_t::CUDA_R_16BF;
    let out_type = match o.out {
        OutType::Bf16 => bf,
        OutType::F32 => sys::cudaDataType_t::CUDA_R_32F,
    };
    // Column-major: first operand op(B)ᵀ [n, k], second op(A)ᵀ [k, m], D [n, m].
    let first = if s.trans_b {
        lt::create_matrix_layout(bf, k, n, k as i64)
    } else {
        lt::create_matrix_layout(bf, n, k, n as i64)
    };
    let first = Layout(first.map_err(|e| fail("layout", e))?);
    let second = if s.trans_a {
        lt::create_matrix_layout(bf, m, k, m as i64)
    } else {
        lt::create_matrix_layout(bf, k, m, k as i64)
    };
    let second = Layout(second.map_err(|e| fail("layout", e))?);
    let out = Layout(lt::create_matrix_layout(out_type, n, m, n as i64).map_err(|e| fail("layout", e))?);
    let desc = Desc(
        lt::create_matmul_desc(sys::cublasComputeType_t::CUBLAS_COMPUTE_32F, sys::cudaDataType_t::CUDA_R_32F)
            .map_err(|e| fail("desc", e))?,
    );
    // cublasOperation_t as cuBLASLt's attribute takes it: CUBLAS_OP_N = 0, CUBLAS_OP_T = 1.
    let op_of = |t: bool| t as i32;
    let stream = dev.stream();
    let bias_ptr = o.bias.map(|b| b.0);
    // SAFETY: attribute buffers are the documented types and sizes.
    unsafe {
        let set = |attr, ptr: *const c_void, size| lt::set_matmul_desc_attribute(desc.0, attr, ptr, size);
        use sys::cublasLtMatmulDescAttributes_t as A;
        let ta = op_of(s.trans_b);
        let tb = op_of(s.trans_a);
        set(A::CUBLASLT_MATMUL_DESC_TRANSA, &ta as *const _ as *const c_void, size_of_val(&ta))
            .map_err(|e| fail("desc", e))?;
        set(A::CUBLASLT_MATMUL_DESC_TRANSB, &tb as *const _ as *const c_void, size_of_val(&tb))
            .map_err(|e| fail("desc", e))?;
        if let Some(ptr) = bias_ptr.as_ref() {
            let epi = sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS;
            set(A::CUBLASLT_MATMUL_DESC_EPILOGUE, &epi as *const _ as *const c_void, size_of_val(&epi))
                .map_err(|e| fail("desc", e))?;
            set(A::CUBLASLT_MATMUL_DESC_BIAS_POINTER, ptr as *const _ as *const c_void, size_of_val(ptr))
                .map_err(|e| fail("desc", e))?;
        }
    }
    let pref = Pref(lt::create_matmul_pref().map_err(|e| fail("preference", e))?);
    // SAFETY: a u64 workspace size, as the attribute requires.
    unsafe {
        let ws = WORKSPACE_BYTES as u64;
        lt::set_matmul_pref_attribute(
            pref.0,
            sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
            &ws as *const u64 as *const c_void,
            size_of::<u64>(),
        )
        .map_err(|e| fail("preference", e))?;
    }
    // SAFETY: layouts describe the checked buffers.
    let heuristic =
        unsafe { lt::get_matmul_algo_heuristic(ltb.handle, desc.0, first.0, second.0, out.0, out.0, pref.0) }
            .map_err(|e| fail("heuristic (no algorithm for these shapes/types)", e))?;
    let (pa, pb, pc) = (o.a.0, o.b.0, o.c.0);
    let (pw, _sw) = ltb.workspace.device_ptr(stream);
    dev.count_gemm();
    // SAFETY: all pointers are live device buffers of the checked sizes on this
    // stream; alpha/beta are f32 as the scale type says.
    unsafe {
        lt::matmul(
            ltb.handle,
            desc.0,
            &s.alpha as *const f32 as *const c_void,
            &s.beta as *const f32 as *const c_void,
            pb as *const c_void,
            first.0,
            pa as *const c_void,
            second.0,
            pc as *const c_void,
            out.0,
            pc as *mut c_void,
            out.0,
            &heuristic.algo,
            pw as *mut c_void,
            WORKSPACE_BYTES,
            stream.cu_stream() as sys::cudaStream_t,
        )
    }
    .map_err(|e| fail("matmul", e))
}

/// `y = x·Wᵀ (+ b)` for `x: [rows, din]`, `W: [dout, din]`: a linear layer.
pub fn linear(
    dev: &CudaDevice,
    x: &CudaSlice<bf16>,
    w: &CudaSlice<bf16>,
    b: Option<&CudaSlice<bf16>>,
    rows: usize,
    din: usize,
    dout: usize,
) -> Result<CudaSlice<bf16>> {
    let mut y = dev.uninit::<bf16>(rows * dout, "cuda::linear")?;
    let spec = GemmSpec { m: rows, n: dout, k: din, trans_a: false, trans_b: true, alpha: 1.0, beta: 0.0 };
    gemm(dev, spec, x, w, &mut y, b)?;
    Ok(y)
}
