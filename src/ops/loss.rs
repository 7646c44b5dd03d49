//! Losses on `[T, V]` logits: masked cross-entropy and chosen-token log-probs.

#[cfg(actial_cuda)]
use super::cuda;
use super::{common_device, cpu_f32, expect_dims, expect_rank, host_i32, on_cuda};
use crate::cpu::loss as k;
pub use crate::cpu::loss::IGNORE_INDEX;
use crate::error::Result;
use crate::tensor::{Device, Tensor};
use crate::{arg_err, shape_err};

/// Cross-entropy forward result.
pub struct CrossEntropy {
    /// Mean loss over labelled rows (0 when there are none).
    pub loss: f32,
    /// Sum of per-row losses (for averaging across micro-batches).
    pub loss_sum: f64,
    /// Rows whose label is not `IGNORE_INDEX`.
    pub tokens: usize,
    /// Per-row log-sum-exp `[T]`, saved for the backward.
    pub lse: Tensor,
}

/// Checks `logits: [T, V]` against `ids: [T]` (each in `0..V`, or -100 when
/// `allow_ignore`); the error names the first bad row.
fn check_ids(op: &'static str, logits: &Tensor, ids: &Tensor, allow_ignore: bool) -> Result<(usize, usize)> {
    expect_rank(op, "logits", logits, 2)?;
    let (t, v) = (logits.dims()[0], logits.dims()[1]);
    if ids.dims() != [t] {
        return Err(shape_err!(op, "logits {} need ids of shape [{t}], got {}", logits.shape(), ids.shape()));
    }
    for (row, &l) in host_i32(ids, op, "labels")?.iter().enumerate() {
        if !((0..v as i32).contains(&l) || allow_ignore && l == IGNORE_INDEX) {
            return Err(arg_err!(
                op,
                "row {row}: label {l} is outside 0..{v}{}",
                if allow_ignore { " and is not -100" } else { "" }
            ));
        }
    }
    Ok((t, v))
}

/// Mean cross-entropy over rows whose label is not -100. The caller shifts labels
/// for next-token prediction.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<CrossEntropy> {
    const OP: &str = "cross_entropy";
    let (t, v) = check_ids(OP, logits, labels, true)?;
    match common_device(OP, &[logits])? {
        Device::Cpu => {
            let lab = &*host_i32(labels, OP, "labels")?;
            let (lse, losses) = k::cross_entropy_forward(&logits.f32_cow(OP, "logits")?, lab, v);
            let tokens = lab.iter().filter(|&&l| l != IGNORE_INDEX).count();
            let loss_sum: f64 = losses.iter().map(|&x| x as f64).sum();
            let loss = if tokens > 0 { (loss_sum / tokens as f64) as f32 } else { 0.0 };
            Ok(CrossEntropy { loss, loss_sum, tokens, lse: cpu_f32(lse, [t])? })
        }
        Device::Cuda(_) => on_cuda!(cuda::cross_entropy(logits, &host_i32(labels, OP, "labels")?, v)),
    }
}

/// `dlogits = (softmax − onehot)·grad_scale` on labelled rows. For the mean of one
/// batch `grad_scale = 1/tokens`; across accumulated micro-batches use 1/(all their
/// labelled tokens) so the sum of micro-batch gradients equals the big batch's.
pub fn cross_entropy_backward(logits: &Tensor, labels: &Tensor, fwd: &CrossEntropy, grad_scale: f32) -> Result<Tensor> {
    const OP: &str = "cross_entropy_backward";
    let (t, v) = check_ids(OP, logits, labels, true)?;
    expect_dims(OP, "lse", &fwd.lse, &[t])?;
    match common_device(OP, &[logits, &fwd.lse])? {
        Device::Cpu => {
            let d = k::cross_entropy_backward(
                &logits.f32_cow(OP, "logits")?,
                &host_i32(labels, OP, "labels")?,
                &fwd.lse.f32_cow(OP, "lse")?,
                v,
                grad_scale,
            );
            cpu_f32(d, [t, v])
        }
        Device::Cuda(_) => on_cuda!(cuda::cross_entropy_backward(
            logits,
            &host_i32(labels, OP, "labels")?,
            v,
            cuda::RowScale::Uniform(grad_scale)
        )),
    }
}

/// As [`cross_entropy_backward`] with one gradient scale per row (`row_scale: [T]`),
/// e.g. 1/(the row's sample's supervised tokens) for a per-sample mean.
pub fn cross_entropy_backward_rows(
    logits: &Tensor,
    labels: &Tensor,
    fwd: &CrossEntropy,
    row_scale: &[f32],
) -> Result<Tensor> {
    const OP: &str = "cross_entropy_backward_rows";
    let (t, v) = check_ids(OP, logits, labels, true)?;
    expect_dims(OP, "lse", &fwd.lse, &[t])?;
    if row_scale.len() != t {
        return Err(shape_err!(OP, "logits {} need {t} row scales, got {}", logits.shape(), row_scale.len()));
    }
    match common_device(OP, &[logits, &fwd.lse])? {
        Device::Cpu => {
            let d = k::cross_entropy_backward_rows(
                &logits.f32_cow(OP, "logits")?,
                &host_i32(labels, OP, "labels")?,
                &fwd.lse.f32_cow(OP, "lse")?,
                v,
                &|r| row_scale[r],
            );
            cpu_f32(d, [t, v])
        }
        Device::Cuda(_) => on_cuda!(cuda::cross_entropy_backward(
            logits,
            &host_i32(labels, OP, "labels")?,
            v,
            cuda::RowScale::PerRow(row_scale)
        )),
    }
}

/// `log_softmax(logits / temperature)[t, ids[t]]` per row: `(logp [T], lse [T])`.
pub fn token_logprobs(logits: &Tensor, ids: &Tensor, temperature: f32) -> Result<(Tensor, Tensor)> {
    const OP: &str = "token_logprobs";
    let (t, v) = check_ids(OP, logits, ids, false)?;
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(arg_err!(OP, "temperature must be positive and finite, got {temperature}"));
    }
    match common_device(OP, &[logits])? {
        Device::Cpu => {
            let (lp, lse) = k::token_logprobs_forward(
                &logits.f32_cow(OP, "logits")?,
                &host_i32(ids, OP, "ids")?,
                v,
                1.0 / temperature,
            );
            Ok((cpu_f32(lp, [t])?, cpu_f32(lse, [t])?))
        }
        Device::Cuda(_) => on_cuda!(cuda::token_logprobs(logits, &host_i32(ids, OP, "ids")?, v, 1.0 / temperature)),
    }
}

/// Backward of [`token_logprobs`] given `dlogp: [T]`.
pub fn token_logprobs_backward(
    logits: &Tensor,
    ids: &Tensor,
    lse: &Tensor,
    dlogp: &Tensor,
    temperature: f32,
) -> Result<Tensor> {
    const OP: &str = "token_logprobs_backward";
    let (t, v) = check_ids(OP, logits, ids, false)?;
    expect_dims(OP, "lse", lse, &[t])?;
    expect_dims(OP, "dlogp", dlogp, &[t])?;
    match common_device(OP, &[logits, lse, dlogp])? {
        Device::Cpu => {
            let d = k::token_logprobs_backward(
                &logits.f32_cow(OP, "logits")?,
                &host_i32(ids, OP, "ids")?,
                &lse.f32_cow(OP, "lse")?,
                &dlogp.f32_cow(OP, "dlogp")?,
                v,
                1.0 / temperature,
            );
            cpu_f32(d, [t, v])
        }
        Device::Cuda(_) => on_cuda!(cuda::token_logprobs_backward(
            logits,
            &host_i32(ids, OP, "ids")?,
            lse,
            dlogp,
            v,
            1.0 / temperature
        )),
    }
}
