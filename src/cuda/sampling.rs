//! Launch wrapper for `cuda/sampling.cu`: `n` draws per logits row with the CPU
//! twin's Philox streams (`src/cpu/sampling.rs::sample_rows_streams`).

use cudarc::driver::CudaSlice;
use half::bf16;

use super::device::{CudaDevice, check_len, launch, params, per_row};
use crate::arg_err;
use crate::cpu::sampling::SamplingParams;
use crate::error::Result;

/// Threads per row block (SAMPLE_THREADS in `cuda/sampling.cu`).
pub const SAMPLE_THREADS: u32 = 1024;

/// Draws `n` tokens from each row of `logits: [rows, v]`; sample `j` of row `r`
/// uses Philox stream `streams[r] + j` under key `seed`; `banned` ids (each
/// `< v`, at most `ACTIAL_MAX_BANNED`, not all of them) are never drawn.
/// Returns device buffers `(tokens, logprobs)`, both `[rows·n]`, row-major;
/// the log-probs are over the full, unmasked row.
#[allow(clippy::too_many_arguments)]
pub fn sample_rows(
    dev: &CudaDevice,
    logits: &CudaSlice<bf16>,
    v: usize,
    n: usize,
    p: &SamplingParams,
    seed: u64,
    streams: &[u64],
    banned: &[u32],
) -> Result<(CudaSlice<u32>, CudaSlice<f32>)> {
    const OP: &str = "cuda::sample_rows";
    check_banned(OP, banned, v)?;
    let Launch { rows, streams: d_streams, mut tokens, mut logp, params: mut k } =
        prepare(dev, OP, logits, v, n, p, seed, streams)?;
    k.n_banned = banned.len() as i32;
    let ids: Vec<i32> = banned.iter().map(|&b| b as i32).collect();
    let d_banned = dev.upload(&ids, OP)?;
    launch!(dev, "sample_rows", per_row(rows, SAMPLE_THREADS), format!("[{rows}, {v}] x {n}");
        logits, &d_streams, &d_banned, &k, &mut tokens, &mut logp)?;
    Ok((tokens, logp))
}

/// The banned list a launch accepts: ids inside the vocabulary, few enough for
/// shared memory, at least one id left to draw.
pub fn check_banned(op: &'static str, banned: &[u32], v: usize) -> Result<()> {
    let max = params::ACTIAL_MAX_BANNED as usize;
    if banned.len() > max {
        return Err(arg_err!(op, "{} banned ids; at most {max} are supported", banned.len()));
    }
    if let Some(b) = banned.iter().find(|&&b| b as usize >= v) {
        return Err(arg_err!(op, "banned id {b} is outside the vocabulary of {v}"));
    }
    let mut distinct = banned.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() >= v {
        return Err(arg_err!(op, "every one of the {v} vocabulary ids is banned"));
    }
    Ok(())
}

/// What both samplers launch with: checked sizes, the streams on the device, the
/// output buffers and the kernel's parameter struct.
struct Launch {
    rows: usize,
    streams: CudaSlice<u64>,
    tokens: CudaSlice<u32>,
    logp: CudaSlice<f32>,
    params: params::ActialSamplingParams,
}

#[allow(clippy::too_many_arguments)]
fn prepare(
    dev: &CudaDevice,
    op: &'static str,
    logits: &CudaSlice<bf16>,
    v: usize,
    n: usize,
    p: &SamplingParams,
    seed: u64,
    streams: &[u64],
) -> Result<Launch> {
    let rows = streams.len();
    check_len(op, "logits", logits.len(), rows * v)?;
    if v == 0 || v > i32::MAX as usize || n == 0 {
        return Err(arg_err!(op, "vocabulary {v} and samples per row {n} must be positive"));
    }
    if p.top_p.is_nan() || p.top_p <= 0.0 {
        return Err(arg_err!(op, "top_p {} must be in (0, 1]", p.top_p));
    }
    Ok(Launch {
        rows,
        streams: dev.upload(streams, op)?,
        tokens: dev.uninit::<u32>(rows * n, op)?,
        logp: dev.uninit::<f32>(rows * n, op)?,
        params: kernel_params(p, v, rows, n, seed),
    })
}

/// The kernel's parameter struct (shared with the CPU emulator of the kernel).
pub fn kernel_params(p: &SamplingParams, v: usize, rows: usize, n: usize, seed: u64) -> params::ActialSamplingParams {
    params::ActialSamplingParams {
        temperature: p.temperature,
        top_k: p.top_k.min(i32::MAX as usize) as i32,
        top_p: p.top_p,
        vocab: v as i32,
        rows: rows as i32,
        samples_per_row: n as i32,
        seed_lo: seed as u32,
        seed_hi: (seed >> 32) as u32,
        n_banned: 0,
    }
}

/// The sort-based sampler the benches compare [`sample_rows`] against: sorts
/// every row (bitonic, in a `[rows, next_pow2(v)]` scratch), then cuts and draws
/// on the sorted order. Same distribution, different token for a given uniform.
pub fn sample_rows_sorted_baseline(
    dev: &CudaDevice,
    logits: &CudaSlice<bf16>,
    v: usize,
    n: usize,
    p: &SamplingParams,
    seed: u64,
    streams: &[u64],
) -> Result<(CudaSlice<u32>, CudaSlice<f32>)> {
    const OP: &str = "cuda::sample_rows_sorted_baseline";
    let Launch { rows, streams: d_streams, mut tokens, mut logp, params: k } =
        prepare(dev, OP, logits, v, n, p, seed, streams)?;
    let padded = v.next_power_of_two();
    let mut val = dev.uninit::<f32>(rows * padded, OP)?;
    let mut idx = dev.uninit::<i32>(rows * padded, OP)?;
    let pad = padded as i32;
    launch!(dev, "sample_rows_sorted_baseline", per_row(rows, SAMPLE_THREADS), format!("[{rows}, {v}] x {n}");
        logits, &d_streams, &k, &mut val, &mut idx, &pad, &mut tokens, &mut logp)?;
    Ok((tokens, logp))
}
