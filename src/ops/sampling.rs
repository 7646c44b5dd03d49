//! Sampling next tokens from logits rows (see `cpu::sampling`).

use super::cuda;
use super::{common_device, cpu_f32, expect_rank};
use crate::arg_err;
use crate::cpu::sampling as k;
pub use crate::cpu::sampling::SamplingParams;
use crate::error::Result;
use crate::tensor::{Device, Tensor};

/// Most banned ids one draw takes (`ACTIAL_MAX_BANNED` of `cuda/params.h`: the
/// device sampler keeps them in shared memory).
pub const MAX_BANNED: usize = 64;

/// Draws `n` tokens from each row of `logits: [R, V]`, all `n` from the same row
/// distribution (a GRPO group shares its prompt's). Returns `(tokens: [R·n] i32,
/// logprobs: [R·n] f32)` on the CPU, row-major; reproducible from `(seed, stream0)`.
pub fn sample(logits: &Tensor, n: usize, p: &SamplingParams, seed: u64, stream0: u64) -> Result<(Tensor, Tensor)> {
    let _profile = super::profile::scope("sampling", "sample");
    let rows = if logits.dims().len() == 2 { logits.dims()[0] } else { 0 };
    let streams: Vec<u64> = (0..rows).map(|r| stream0 + (r * n) as u64).collect();
    let (tok, lp) = sample_streams(logits, n, p, seed, &streams, &[])?;
    let len = tok.len();
    let tok: Vec<i32> = tok.into_iter().map(|t| t as i32).collect();
    Ok((Tensor::from_i32(tok, [len], Device::Cpu)?, cpu_f32(lp, [len])?))
}

/// [`sample`] with each row's first Philox stream given (`streams[r] + j` for its
/// draw `j`: decoding keeps each sample on its own streams whichever rows are
/// still active) and `banned` ids that are never drawn (ids past the vocabulary
/// are ignored); the log-probs stay the model's over the full row. Returns the
/// tokens and log-probs on the host: on CUDA the logits never leave the device,
/// only `R·n` ids and log-probs (8 bytes a draw) come back.
pub fn sample_streams(
    logits: &Tensor,
    n: usize,
    p: &SamplingParams,
    seed: u64,
    streams: &[u64],
    banned: &[u32],
) -> Result<(Vec<u32>, Vec<f32>)> {
    let _profile = super::profile::scope("sampling", "sample_streams");
    const OP: &str = "sample";
    expect_rank(OP, "logits", logits, 2)?;
    let (r, v) = (logits.dims()[0], logits.dims()[1]);
    if streams.len() != r {
        return Err(arg_err!(OP, "{} stream ids for {r} rows", streams.len()));
    }
    if !(p.top_p > 0.0 && p.top_p <= 1.0) {
        return Err(arg_err!(OP, "top_p must be in (0, 1], got {}", p.top_p));
    }
    if !(p.temperature >= 0.0 && p.temperature.is_finite()) {
        return Err(arg_err!(OP, "temperature must be >= 0 and finite, got {}", p.temperature));
    }
    let mut banned: Vec<u32> = banned.iter().copied().filter(|&b| (b as usize) < v).collect();
    banned.sort_unstable();
    banned.dedup();
    if banned.len() > MAX_BANNED {
        return Err(arg_err!(OP, "{} banned ids; at most {MAX_BANNED} are supported", banned.len()));
    }
    if v > 0 && banned.len() >= v {
        return Err(arg_err!(OP, "every one of the {v} vocabulary ids is banned"));
    }
    match common_device(OP, &[logits])? {
        Device::Cpu => {
            let x = logits.f32_cow(OP, "logits")?;
            if let Some(i) = x.iter().position(|v| v.is_nan()) {
                return Err(arg_err!(OP, "row {}: logit {} is NaN", i / v, i % v));
            }
            Ok(k::sample_rows_streams(&x, v, n, p, seed, streams, &banned))
        }
        Device::Cuda(_) => cuda::sample_streams(logits, n, p, seed, streams, &banned),
    }
}
