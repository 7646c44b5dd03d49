//! Launch wrappers for `cuda/loss.cu`, and the chunked linear + cross-entropy
//! that never holds the whole `[T, V]` logits: per chunk of rows, one GEMM for
//! the chunk's logits, one fused kernel turning them into loss and dlogits in
//! place, two GEMMs for dh and dW. Peak extra memory is one `[chunk, V]` bf16
//! buffer instead of `[T, V]`.

use cudarc::driver::{CudaSlice, DevicePtr};
use half::bf16;

use super::device::{CudaDevice, check_len, launch, per_row};
use super::gemm::{GemmSpec, gemm, gemm_f32_out};
use crate::arg_err;
use crate::cpu::loss::IGNORE_INDEX;
use crate::error::Result;

/// Threads per row block of the loss kernels.
pub const THREADS: u32 = 512;

fn upload_labels(
    dev: &CudaDevice,
    op: &'static str,
    labels: &[i32],
    v: usize,
    allow_ignore: bool,
) -> Result<CudaSlice<i32>> {
    if let Some((row, &l)) =
        labels.iter().enumerate().find(|&(_, &l)| !(l >= 0 && (l as usize) < v || allow_ignore && l == IGNORE_INDEX))
    {
        return Err(arg_err!(op, "label[{row}] = {l} is outside 0..{v}"));
    }
    dev.upload(labels, op)
}

/// Per-row loss, log-sum-exp, and the optional dlogits.
pub type CrossEntropyOut = (CudaSlice<f32>, CudaSlice<f32>, Option<CudaSlice<bf16>>);

/// Per-row `(loss, lse)` of `logits: [rows, v]` (0 on rows labelled -100) and,
/// when `grad_scale` is given, `dlogits = (softmax − onehot)·grad_scale`.
pub fn cross_entropy(
    dev: &CudaDevice,
    logits: &CudaSlice<bf16>,
    labels: &[i32],
    v: usize,
    grad_scale: Option<f32>,
) -> Result<CrossEntropyOut> {
    const OP: &str = "cuda::cross_entropy";
    let rows = labels.len();
    check_len(OP, "logits", logits.len(), rows * v)?;
    let d_labels = upload_labels(dev, OP, labels, v, true)?;
    let mut loss = dev.uninit::<f32>(rows, OP)?;
    let mut lse = dev.uninit::<f32>(rows, OP)?;
    let (r, vv, s) = (rows as i32, v as i32, grad_scale.unwrap_or(0.0));
    let shapes = format!("[{rows}, {v}]");
    let dlogits = match grad_scale {
        Some(_) => {
            let mut d = dev.uninit::<bf16>(rows * v, OP)?;
            launch!(dev, "cross_entropy_forward_backward", per_row(rows, THREADS), shapes;
                logits, &d_labels, &mut loss, &mut lse, &mut d, &r, &vv, &s)?;
            Some(d)
        }
        None => {
            let null = 0u64;
            launch!(dev, "cross_entropy_forward_backward", per_row(rows, THREADS), shapes;
                logits, &d_labels, &mut loss, &mut lse, &null, &r, &vv, &s)?;
            None
        }
    };
    Ok((loss, lse, dlogits))
}

/// `(logp, lse)`: `logp[t] = s·logits[t, ids[t]] − lse(s·logits[t])`.
pub fn token_logprobs_forward(
    dev: &CudaDevice,
    logits: &CudaSlice<bf16>,
    ids: &[i32],
    v: usize,
    s: f32,
) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
    const OP: &str = "cuda::token_logprobs_forward";
    let rows = ids.len();
    check_len(OP, "logits", logits.len(), rows * v)?;
    let d_ids = upload_labels(dev, OP, ids, v, false)?;
    let mut logp = dev.uninit::<f32>(rows, OP)?;
    let mut lse = dev.uninit::<f32>(rows, OP)?;
    let (r, vv) = (rows as i32, v as i32);
    launch!(dev, "token_logprobs_forward", per_row(rows, THREADS), format!("[{rows}, {v}]");
        logits, &d_ids, &mut logp, &mut lse, &r, &vv, &s)?;
    Ok((logp, lse))
}

/// `dlogits[t] = s·dlogp[t]·(onehot(ids[t]) − softmax(s·logits[t]))`.
pub fn token_logprobs_backward(
    dev: &CudaDevice,
    logits: &CudaSlice<bf16>,
    ids: &[i32],
    lse: &CudaSlice<f32>,
    dlogp: &CudaSlice<f32>,
    v: usize,
    s: f32,
) -> Result<CudaSlice<bf16>> {
    const OP: &str = "cuda::token_logprobs_backward";
    let rows = ids.len();
    check_len(OP, "logits", logits.len(), rows * v)?;
    check_len(OP, "lse", lse.len(), rows)?;
    check_len(OP, "dlogp", dlogp.len(), rows)?;
    let d_ids = upload_labels(dev, OP, ids, v, false)?;
    let mut d = dev.uninit::<bf16>(rows * v, OP)?;
    let (r, vv) = (rows as i32, v as i32);
    launch!(dev, "token_logprobs_backward", per_row(rows, THREADS), format!("[{rows}, {v}]");
        logits, &d_ids, lse, dlogp, &mut d, &r, &vv, &s)?;
    Ok(d)
}

/// The result of [`linear_cross_entropy`].
pub struct LinearCrossEntropy {
    /// Per-row losses `[T]` (0 on ignored rows).
    pub loss: CudaSlice<f32>,
    /// `dL/dh: [T, D]`.
    pub dh: CudaSlice<bf16>,
}

/// How a loss gradient is scaled: one factor for every row, or one per row
/// (per-sample loss weights).
#[derive(Clone, Copy, Debug)]
pub enum GradScale<'a> {
    Uniform(f32),
    PerRow(&'a [f32]),
}

/// Cross-entropy of `logits = h·Wᵀ` (`h: [T, D]`, `W: [V, D]`) without ever
/// materialising more than `chunk_rows` rows of logits. Accumulates
/// `dW += dlogitsᵀ·h` (f32) when `dw` is given; gradients carry `scale`.
#[allow(clippy::too_many_arguments)]
pub fn linear_cross_entropy(
    dev: &CudaDevice,
    h: &CudaSlice<bf16>,
    w: &CudaSlice<bf16>,
    labels: &[i32],
    d: usize,
    v: usize,
    chunk_rows: usize,
    scale: GradScale<'_>,
    mut dw: Option<&mut CudaSlice<f32>>,
) -> Result<LinearCrossEntropy> {
    const OP: &str = "cuda::linear_cross_entropy";
    let t = labels.len();
    check_linear(OP, h, w, t, d, v, chunk_rows)?;
    if let Some(dw) = dw.as_ref() {
        check_len(OP, "dW", dw.len(), v * d)?;
    }
    let (grad_scale, row_scale) = match scale {
        GradScale::Uniform(s) => (s, None),
        GradScale::PerRow(r) => {
            check_len(OP, "row scales", r.len(), t)?;
            (1.0f32, Some(dev.upload(r, OP)?))
        }
    };
    let d_labels = upload_labels(dev, OP, labels, v, true)?;
    let loss = dev.uninit::<f32>(t, OP)?;
    let lse = dev.uninit::<f32>(t, OP)?;
    let mut dh = dev.uninit::<bf16>(t * d, OP)?;
    let mut logits = dev.uninit::<bf16>(chunk_rows.min(t).max(1) * v, OP)?;
    let (vv, shapes) = (v as i32, format!("[{t}, {d}] x [{v}, {d}], chunks of {chunk_rows}"));
    let mut r0 = 0;
    while r0 < t {
        let rows = chunk_rows.min(t - r0);
        let h_c = h.slice(r0 * d..(r0 + rows) * d);
        chunk_logits(dev, &h_c, w, rows, d, v, &mut logits)?;
        // Loss and dlogits in place. Raw addresses: the kernel reads and writes
        // the same chunk, which the borrow checker cannot express.
        let base = dev.address(&logits);
        let row_off = (r0 * size_of::<f32>()) as u64;
        let (lab, lo, ls) =
            (dev.address(&d_labels) + row_off, dev.address(&loss) + row_off, dev.address(&lse) + row_off);
        let r = rows as i32;
        launch!(dev, "cross_entropy_forward_backward", per_row(rows, THREADS), shapes;
            &base, &lab, &lo, &ls, &base, &r, &vv, &grad_scale)?;
        if let Some(rs) = &row_scale {
            let sc = dev.address(rs) + row_off;
            launch!(dev, "scale_rows_bf16", super::device::grid_for(rows * v, super::small_ops::THREADS), shapes;
                &base, &sc, &r, &vv)?;
        }
        chunk_backward(dev, &logits, &h_c, w, rows, d, v, &mut dh, r0, dw.as_deref_mut())?;
        r0 += rows;
    }
    Ok(LinearCrossEntropy { loss, dh })
}

/// Threads of the one block of `sum_f32_to_f64` (its shared array's size).
const SUM_THREADS: u32 = 1024;

/// `Σ x` in f64 on the device; only the sum (8 bytes) comes back.
pub fn sum_to_host(dev: &CudaDevice, x: &CudaSlice<f32>) -> Result<f64> {
    const OP: &str = "cuda::sum_to_host";
    let mut out = dev.uninit::<f64>(1, OP)?;
    let n = x.len() as i32;
    let cfg = cudarc::driver::LaunchConfig { grid_dim: (1, 1, 1), block_dim: (SUM_THREADS, 1, 1), shared_mem_bytes: 0 };
    launch!(dev, "sum_f32_to_f64", cfg, format!("{n} values"); x, &n, &mut out)?;
    Ok(dev.download(&out, OP)?[0])
}

/// `logits[..rows·v] = h_c · Wᵀ` for one chunk of rows.
fn chunk_logits<H: DevicePtr<bf16>>(
    dev: &CudaDevice,
    h_c: &H,
    w: &CudaSlice<bf16>,
    rows: usize,
    d: usize,
    v: usize,
    logits: &mut CudaSlice<bf16>,
) -> Result<()> {
    let mut logits_c = logits.slice_mut(..rows * v);
    let spec = GemmSpec { m: rows, n: v, k: d, trans_a: false, trans_b: true, alpha: 1.0, beta: 0.0 };
    gemm(dev, spec, h_c, w, &mut logits_c, None)
}

/// From one chunk's dlogits (`logits[..rows·v]`): `dh[r0..r0+rows] = dlogits·W`
/// and `dW += dlogitsᵀ·h_c` (f32) when `dw` is given.
#[allow(clippy::too_many_arguments)]
fn chunk_backward<H: DevicePtr<bf16>>(
    dev: &CudaDevice,
    dlogits: &CudaSlice<bf16>,
    h_c: &H,
    w: &CudaSlice<bf16>,
    rows: usize,
    d: usize,
    v: usize,
    dh: &mut CudaSlice<bf16>,
    r0: usize,
    dw: Option<&mut CudaSlice<f32>>,
) -> Result<()> {
    let dlogits_c = dlogits.slice(..rows * v);
    {
        let mut dh_c = dh.slice_mut(r0 * d..(r0 + rows) * d);
        let spec = GemmSpec { m: rows, n: d, k: v, trans_a: false, trans_b: false, alpha: 1.0, beta: 0.0 };
        gemm(dev, spec, &dlogits_c, w, &mut dh_c, None)?;
    }
    if let Some(dw) = dw {
        let spec = GemmSpec { m: v, n: d, k: rows, trans_a: true, trans_b: false, alpha: 1.0, beta: 1.0 };
        gemm_f32_out(dev, spec, &dlogits_c, h_c, dw)?;
    }
    Ok(())
}

fn check_linear(
    op: &'static str,
    h: &CudaSlice<bf16>,
    w: &CudaSlice<bf16>,
    t: usize,
    d: usize,
    v: usize,
    chunk_rows: usize,
) -> Result<()> {
    check_len(op, "h", h.len(), t * d)?;
    check_len(op, "W", w.len(), v * d)?;
    if chunk_rows == 0 {
        return Err(arg_err!(op, "chunk_rows must be at least 1"));
    }
    Ok(())
}

/// Selected-token log-probabilities of `logits = h·Wᵀ` (`h: [T, D]`, `W: [V, D]`)
/// at scale `s = 1/temperature`, `chunk_rows` rows of logits at a time (GRPO's
/// policy and reference log-probs). Returns `(logp [T], lse [T])`; with
/// `entropy` (`[T]`) also each row's entropy of `softmax(s·logits)`.
#[allow(clippy::too_many_arguments)]
pub fn linear_token_logprobs_forward(
    dev: &CudaDevice,
    h: &CudaSlice<bf16>,
    w: &CudaSlice<bf16>,
    ids: &[i32],
    d: usize,
    v: usize,
    s: f32,
    chunk_rows: usize,
    entropy: Option<&mut CudaSlice<f32>>,
) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
    const OP: &str = "cuda::linear_token_logprobs_forward";
    let t = ids.len();
    check_linear(OP, h, w, t, d, v, chunk_rows)?;
    if let Some(e) = entropy.as_ref() {
        check_len(OP, "entropy", e.len(), t)?;
    }
    let entropy_base = entropy.map(|e| dev.address(e));
    let d_ids = upload_labels(dev, OP, ids, v, false)?;
    let logp = dev.uninit::<f32>(t, OP)?;
    let lse = dev.uninit::<f32>(t, OP)?;
    let mut logits = dev.uninit::<bf16>(chunk_rows.min(t).max(1) * v, OP)?;
    let (vv, shapes) = (v as i32, format!("[{t}, {d}] x [{v}, {d}], chunks of {chunk_rows}"));
    let mut r0 = 0;
    while r0 < t {
        let rows = chunk_rows.min(t - r0);
        chunk_logits(dev, &h.slice(r0 * d..(r0 + rows) * d), w, rows, d, v, &mut logits)?;
        let off = (r0 * size_of::<f32>()) as u64;
        let (base, id, lp, ls) =
            (dev.address(&logits), dev.address(&d_ids) + off, dev.address(&logp) + off, dev.address(&lse) + off);
        let r = rows as i32;
        launch!(dev, "token_logprobs_forward", per_row(rows, THREADS), shapes; &base, &id, &lp, &ls, &r, &vv, &s)?;
        if let Some(e) = entropy_base {
            let e = e + off;
            launch!(dev, "row_entropy", per_row(rows, THREADS), shapes; &base, &e, &r, &vv, &s)?;
        }
        r0 += rows;
    }
    Ok((logp, lse))
}

/// Backward of [`linear_token_logprobs_forward`]: recomputes each chunk's logits,
/// turns them into `dlogits = s·dlogp·(onehot − softmax)` in place, returns
/// `dh: [T, D]` and accumulates `dW += dlogitsᵀ·h` (f32) when `dw` is given.
#[allow(clippy::too_many_arguments)]
pub fn linear_token_logprobs_backward(
    dev: &CudaDevice,
    h: &CudaSlice<bf16>,
    w: &CudaSlice<bf16>,
    ids: &[i32],
    lse: &CudaSlice<f32>,
    dlogp: &CudaSlice<f32>,
    d: usize,
    v: usize,
    s: f32,
    chunk_rows: usize,
    mut dw: Option<&mut CudaSlice<f32>>,
) -> Result<CudaSlice<bf16>> {
    const OP: &str = "cuda::linear_token_logprobs_backward";
    let t = ids.len();
    check_linear(OP, h, w, t, d, v, chunk_rows)?;
    check_len(OP, "lse", lse.len(), t)?;
    check_len(OP, "dlogp", dlogp.len(), t)?;
    if let Some(dw) = dw.as_ref() {
        check_len(OP, "dW", dw.len(), v * d)?;
    }
    let d_ids = upload_labels(dev, OP, ids, v, false)?;
    let mut dh = dev.uninit::<bf16>(t * d, OP)?;
    let mut logits = dev.uninit::<bf16>(chunk_rows.min(t).max(1) * v, OP)?;
    let (vv, shapes) = (v as i32, format!("[{t}, {d}] x [{v}, {d}], chunks of {chunk_rows}"));
    let mut r0 = 0;
    while r0 < t {
        let rows = chunk_rows.min(t - r0);
        let h_c = h.slice(r0 * d..(r0 + rows) * d);
        chunk_logits(dev, &h_c, w, rows, d, v, &mut logits)?;
        let off = (r0 * size_of::<f32>()) as u64;
        let (base, id, ls, dl) =
            (dev.address(&logits), dev.address(&d_ids) + off, dev.address(lse) + off, dev.address(dlogp) + off);
        let r = rows as i32;
        launch!(dev, "token_logprobs_backward", per_row(rows, THREADS), shapes; &base, &id, &ls, &dl, &base, &r, &vv, &s)?;
        chunk_backward(dev, &logits, &h_c, w, rows, d, v, &mut dh, r0, dw.as_deref_mut())?;
        r0 += rows;
    }
    Ok(dh)
}

/// GRPO's per-token objective on the device (`grpo_token_loss`): `dlogp` stays
/// on the device for the backward; only four f64 sums (32 bytes) come back.
/// `tokens` packs old log-probs, reference log-probs, advantages and
/// aggregation denominators, `n` each (one upload).
pub fn policy_loss(
    dev: &CudaDevice,
    logp: &CudaSlice<f32>,
    tokens: &[f32],
    entropy: Option<&CudaSlice<f32>>,
    p: &crate::cpu::loss::PolicyLossParams,
) -> Result<(CudaSlice<f32>, crate::cpu::loss::PolicyLossSums)> {
    const OP: &str = "cuda::policy_loss";
    let n = logp.len();
    debug_assert_eq!(tokens.len(), 4 * n);
    let packed = dev.upload(tokens, OP)?;
    let mut dlogp = dev.uninit::<f32>(n.max(1), OP)?;
    let mut sums = dev.uninit::<f64>(4, OP)?;
    let (ni, ne) = (n as i32, entropy.map_or(0, |e| e.len()) as i32);
    let cfg = cudarc::driver::LaunchConfig { grid_dim: (1, 1, 1), block_dim: (SUM_THREADS, 1, 1), shared_mem_bytes: 0 };
    launch!(dev, "grpo_token_loss", cfg, format!("{n} tokens");
        logp, &packed, entropy.unwrap_or(logp), &ne, &ni, &p.eps_low, &p.eps_high, &p.beta,
        &p.clip_ratio_c, &p.kl_clamp, &mut dlogp, &mut sums)?;
    let s = dev.download(&sums, OP)?;
    Ok((dlogp, crate::cpu::loss::PolicyLossSums { loss: s[0], kl: s[1], clipped: s[2], entropy: s[3] }))
}
