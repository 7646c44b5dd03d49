//! GEMM through the `gemm` crate (runtime-dispatched AVX2/AVX-512 micro-kernels,
//! rayon-parallel), plus linear layers built on it.

use gemm::Parallelism;
use rayon::prelude::*;

/// Below this many multiply-adds a GEMM runs on one thread: spawning costs more.
const PARALLEL_MIN_MACS: usize = 1 << 18;

fn parallelism(m: usize, n: usize, k: usize) -> Parallelism {
    if m * n * k >= PARALLEL_MIN_MACS && rayon::current_num_threads() > 1 {
        Parallelism::Rayon(rayon::current_num_threads())
    } else {
        Parallelism::None
    }
}

/// One matrix operand: a pointer plus row and column strides in elements.
#[derive(Clone, Copy)]
pub struct MatRef {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

impl MatRef {
    /// A row-major matrix of `rows x cols` stored at `data`, or its transpose when
    /// `trans` (then `data` holds `cols x rows`).
    pub fn new(data: &[f32], rows: usize, cols: usize, trans: bool) -> MatRef {
        assert!(data.len() >= rows * cols, "MatRef: buffer smaller than {rows}x{cols}");
        if trans {
            MatRef { ptr: data.as_ptr(), rs: 1, cs: rows as isize }
        } else {
            MatRef { ptr: data.as_ptr(), rs: cols as isize, cs: 1 }
        }
    }
}

/// `C = beta_c*C + alpha*(A·B)` with `C` row-major `m x n` (ld = `ldc`), where
/// `beta_c` is 0 (overwrite) or 1 (accumulate).
///
/// # Safety
/// `a` and `b` must address `m x k` and `k x n` elements through their strides, `c`
/// must hold `m x n` elements with row stride `ldc`, and nothing else may write `c`.
pub unsafe fn gemm_raw(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef,
    b: MatRef,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    alpha: f32,
    par: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let parallel = if par { parallelism(m, n, k) } else { Parallelism::None };
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            ldc as isize,
            accumulate,
            a.ptr,
            a.cs,
            a.rs,
            b.ptr,
            b.cs,
            b.rs,
            1.0,
            alpha,
            false,
            false,
            false,
            parallel,
        );
    }
}

/// Batched `C[i] (+)= alpha * op(A[i]) · op(B[i])`, row-major. `A[i]` is `m x k`
/// (stored `k x m` when `trans_a`), `B[i]` is `k x n` (stored `n x k` when
/// `trans_b`), `C[i]` is `m x n`. A batch stride of 0 shares one operand.
pub fn matmul(
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_stride: usize,
    trans_a: bool,
    b: &[f32],
    b_stride: usize,
    trans_b: bool,
    c: &mut [f32],
    accumulate: bool,
    alpha: f32,
) {
    assert!(c.len() >= batch * m * n);
    assert!(batch == 0 || a.len() >= (batch - 1) * a_stride + m * k);
    assert!(batch == 0 || b.len() >= (batch - 1) * b_stride + k * n);
    let one = |i: usize, ci: &mut [f32], par: bool| {
        let am = MatRef::new(&a[i * a_stride..], m, k, trans_a);
        let bm = MatRef::new(&b[i * b_stride..], k, n, trans_b);
        // SAFETY: the asserts above bound every operand; `ci` is exclusive.
        unsafe { gemm_raw(m, n, k, am, bm, ci.as_mut_ptr(), n, accumulate, alpha, par) }
    };
    if m * n == 0 {
        return;
    }
    // Many small matrices: one thread each. Few large ones: gemm's own threading.
    if batch > 1 && m * n * k < PARALLEL_MIN_MACS * 4 {
        c[..batch * m * n].par_chunks_mut(m * n).enumerate().for_each(|(i, ci)| one(i, ci, false));
    } else {
        for (i, ci) in c[..batch * m * n].chunks_mut(m * n).enumerate() {
            one(i, ci, true);
        }
    }
}

/// `y[t, :] = x[t, :] · Wᵀ + b` for `x: [rows, in]`, `W: [out, in]`, `b: [out]`.
pub fn linear_forward(x: &[f32], w: &[f32], b: Option<&[f32]>, rows: usize, din: usize, dout: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; rows * dout];
    if let Some(b) = b {
        for row in y.chunks_mut(dout) {
            row.copy_from_slice(b);
        }
    }
    matmul(1, rows, dout, din, x, 0, false, w, 0, true, &mut y, b.is_some(), 1.0);
    y
}

/// Backward of [`linear_forward`]: returns `dx = dy·W`; accumulates `dW += dyᵀ·x`
/// and `db += Σ_t dy[t]` when those buffers are given (None = frozen).
pub fn linear_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    rows: usize,
    din: usize,
    dout: usize,
    dw: Option<&mut [f32]>,
    db: Option<&mut [f32]>,
) -> Vec<f32> {
    let mut dx = vec![0.0f32; rows * din];
    matmul(1, rows, din, dout, dy, 0, false, w, 0, false, &mut dx, false, 1.0);
    if let Some(dw) = dw {
        matmul(1, dout, din, rows, dy, 0, true, x, 0, false, dw, true, 1.0);
    }
    if let Some(db) = db {
        column_sums_into(dy, dout, db);
    }
    dx
}

/// `acc[j] += Σ_r m[r, j]` for a row-major matrix with `cols` columns.
pub fn column_sums_into(m: &[f32], cols: usize, acc: &mut [f32]) {
    let sums = m
        .par_chunks(cols * 256)
        .map(|block| {
            let mut s = vec![0.0f32; cols];
            for row in block.chunks(cols) {
                for (a, &v) in s.iter_mut().zip(row) {
                    *a += v;
                }
            }
            s
        })
        // Chunk order, summed sequentially: deterministic (see cpu::norm).
        .collect::<Vec<Vec<f32>>>()
        .into_iter()
        .fold(vec![0.0f32; cols], |mut a, b| {
            a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
            a
        });
    acc.iter_mut().zip(&sums).for_each(|(a, s)| *a += s);
}

/// The textbook triple loop, for tests and as the benches' baseline.
pub fn matmul_naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f32;
            for p in 0..k {
                s += a[i * k + p] * b[p * n + j];
            }
            c[i * n + j] = s;
        }
    }
    c
}
