//! Sampling next tokens from logits rows (see `cpu::sampling`).

#[cfg(actial_cuda)]
use super::cuda;
use super::{common_device, cpu_f32, expect_rank, on_cuda};
use crate::arg_err;
use crate::cpu::sampling as k;
pub use crate::cpu::sampling::SamplingParams;
use crate::error::Result;
use crate::tensor::{Device, Tensor};

/// Draws `n` tokens from each row of `logits: [R, V]`, all `n` from the same row
/// distribution (a GRPO group shares its prompt's). Returns `(tokens: [R·n] i32,
/// logprobs: [R·n] f32)`, row-major; reproducible from `(seed, stream0)`.
pub fn sample(logits: &Tensor, n: usize, p: &SamplingParams, seed: u64, stream0: u64) -> Result<(Tensor, Tensor)> {
    let rows = if logits.dims().len() == 2 { logits.dims()[0] } else { 0 };
    let streams: Vec<u64> = (0..rows).map(|r| stream0 + (r * n) as u64).collect();
    sample_streams(logits, n, p, seed, &streams)
}

/// [`sample`] with each row's first Philox stream given (`streams[r] + j` for its
/// draw `j`): decoding keeps each sample on its own streams whichever rows are
/// still active.
pub fn sample_streams(
    logits: &Tensor,
    n: usize,
    p: &SamplingParams,
    seed: u64,
    streams: &[u64],
) -> Result<(Tensor, Tensor)> {
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
    match common_device(OP, &[logits])? {
        Device::Cpu => {
            let x = logits.f32_cow(OP, "logits")?;
            if let Some(i) = x.iter().position(|v| v.is_nan()) {
                return Err(arg_err!(OP, "row {}: logit {} is NaN", i / v, i % v));
            }
            let (tok, lp) = k::sample_rows_streams(&x, v, n, p, seed, streams);
            let tok: Vec<i32> = tok.into_iter().map(|t| t as i32).collect();
            Ok((Tensor::from_i32(tok, [r * n], Device::Cpu)?, cpu_f32(lp, [r * n])?))
        }
        Device::Cuda(_) => on_cuda!(cuda::sample_streams(logits, n, p, seed, streams)),
    }
}
