//! Losses on `[T, V]` logits: masked cross-entropy and chosen-token log-probs.

use super::cuda;
use super::{common_device, cpu_f32, expect_dims, expect_rank, host_i32};
use crate::cpu::loss as k;
pub use crate::cpu::loss::IGNORE_INDEX;
use crate::error::Result;
use crate::tensor::{Device, Tensor};
use crate::{arg_err, shape_err};

/// How a cross-entropy backward scales each row's gradient: one factor, or one
/// per row (the CUDA arm's argument; the CPU twin takes the same choice).
pub enum RowScale<'a> {
    Uniform(f32),
    PerRow(&'a [f32]),
}

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
    let _profile = super::profile::scope("loss", "cross_entropy");
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
        Device::Cuda(_) => cuda::cross_entropy(logits, &host_i32(labels, OP, "labels")?, v),
    }
}

/// `dlogits = (softmax − onehot)·grad_scale` on labelled rows. For the mean of one
/// batch `grad_scale = 1/tokens`; across accumulated micro-batches use 1/(all their
/// labelled tokens) so the sum of micro-batch gradients equals the big batch's.
pub fn cross_entropy_backward(logits: &Tensor, labels: &Tensor, fwd: &CrossEntropy, grad_scale: f32) -> Result<Tensor> {
    let _profile = super::profile::scope("loss", "cross_entropy_backward");
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
        Device::Cuda(_) => {
            cuda::cross_entropy_backward(logits, &host_i32(labels, OP, "labels")?, v, RowScale::Uniform(grad_scale))
        }
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
    let _profile = super::profile::scope("loss", "cross_entropy_backward_rows");
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
        Device::Cuda(_) => {
            cuda::cross_entropy_backward(logits, &host_i32(labels, OP, "labels")?, v, RowScale::PerRow(row_scale))
        }
    }
}

/// `log_softmax(logits / temperature)[t, ids[t]]` per row: `(logp [T], lse [T])`.
pub fn token_logprobs(logits: &Tensor, ids: &Tensor, temperature: f32) -> Result<(Tensor, Tensor)> {
    let _profile = super::profile::scope("loss", "token_logprobs");
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
        Device::Cuda(_) => cuda::token_logprobs(logits, &host_i32(ids, OP, "ids")?, v, 1.0 / temperature),
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
    let _profile = super::profile::scope("loss", "token_logprobs_backward");
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
        Device::Cuda(_) => {
            cuda::token_logprobs_backward(logits, &host_i32(ids, OP, "ids")?, lse, dlogp, v, 1.0 / temperature)
        }
    }
}

/// How a loss gradient is scaled: one factor for every row, or one per row
/// (per-sample loss weights).
#[derive(Clone, Copy, Debug)]
pub enum GradScale<'a> {
    Uniform(f32),
    PerRow(&'a [f32]),
}

/// Result of [`linear_cross_entropy`].
pub struct LinearCrossEntropy {
    /// Sum of per-row losses and the rows counted (labels not `IGNORE_INDEX`).
    pub loss_sum: f64,
    pub tokens: usize,
    /// `dL/dh: [T, D]`.
    pub dh: Tensor,
}

/// Cross-entropy of `logits = h·Wᵀ` (`h: [T, D]`, `W: [V, D]`, `labels: [T]`)
/// and its backward, computing at most `chunk_rows` rows of logits at a time,
/// so no `[T, V]` tensor ever exists: returns the loss sum and `dh`, and
/// accumulates `dW += dlogitsᵀ·h` when `dw` is given. Gradients carry `scale`.
///
/// On CUDA one fused path (`cuda::loss::linear_cross_entropy`: a GEMM per
/// chunk, loss and dlogits in place, the two backward GEMMs); on the CPU the
/// same ops as the unfused loss, chunk by chunk (one chunk gives exactly the
/// unfused results).
pub fn linear_cross_entropy(
    h: &Tensor,
    w: &Tensor,
    labels: &Tensor,
    scale: GradScale<'_>,
    mut dw: Option<&mut Tensor>,
    chunk_rows: usize,
) -> Result<LinearCrossEntropy> {
    let _profile = super::profile::scope("loss", "linear_cross_entropy");
    const OP: &str = "linear_cross_entropy";
    expect_rank(OP, "h", h, 2)?;
    expect_rank(OP, "W", w, 2)?;
    let (t, d, v) = (h.dims()[0], h.dims()[1], w.dims()[0]);
    if w.dims()[1] != d {
        return Err(shape_err!(OP, "h is {} but W is {}: their last dims differ", h.shape(), w.shape()));
    }
    expect_dims(OP, "labels", labels, &[t])?;
    if let GradScale::PerRow(r) = scale
        && r.len() != t
    {
        return Err(shape_err!(OP, "{t} rows need {t} row scales, got {}", r.len()));
    }
    if chunk_rows == 0 {
        return Err(arg_err!(OP, "chunk_rows must be at least 1"));
    }
    let lab = host_i32(labels, OP, "labels")?;
    if let Some((row, &l)) = lab.iter().enumerate().find(|&(_, &l)| !(l >= 0 && (l as usize) < v || l == IGNORE_INDEX))
    {
        return Err(arg_err!(OP, "label[{row}] = {l} is outside 0..{v}"));
    }
    match common_device(OP, &[h, w])? {
        Device::Cpu => {
            let mut dh = Vec::with_capacity(t.div_ceil(chunk_rows));
            let (mut loss_sum, mut tokens) = (0.0f64, 0usize);
            let mut r0 = 0;
            while r0 < t {
                let rows = chunk_rows.min(t - r0);
                let (h_c, labels_c) = (h.narrow(0, r0, rows)?, labels.narrow(0, r0, rows)?);
                let logits = super::linear(&h_c, w, None)?;
                let ce = cross_entropy(&logits, &labels_c)?;
                let dlogits = match scale {
                    GradScale::Uniform(s) => cross_entropy_backward(&logits, &labels_c, &ce, s)?,
                    GradScale::PerRow(p) => cross_entropy_backward_rows(&logits, &labels_c, &ce, &p[r0..r0 + rows])?,
                };
                drop(logits);
                dh.push(super::linear_backward(&h_c, w, &dlogits, dw.as_deref_mut(), None)?);
                loss_sum += ce.loss_sum;
                tokens += ce.tokens;
                r0 += rows;
            }
            let dh = match dh.len() {
                0 => Tensor::zeros([0, d], h.dtype(), Device::Cpu)?,
                1 => dh.pop().expect("one chunk"),
                _ => Tensor::cat(&dh.iter().collect::<Vec<_>>(), 0)?,
            };
            Ok(LinearCrossEntropy { loss_sum, tokens, dh })
        }
        Device::Cuda(_) => cuda::linear_cross_entropy(h, w, &lab, scale, dw, chunk_rows),
    }
}

/// Result of [`linear_token_logprobs`].
pub struct LinearTokenLogprobs {
    /// `log_softmax(h·Wᵀ / temperature)[t, ids[t]]`, `[T]` f32.
    pub logp: Tensor,
    /// Per-row log-sum-exp `[T]`, for the backward.
    pub lse: Tensor,
    /// Per-row entropy of the tempered softmax, when asked for (`[T]` f32,
    /// where the log-probs are).
    pub entropy: Option<Tensor>,
}

fn check_linear_ids(op: &'static str, h: &Tensor, w: &Tensor, ids: &Tensor, chunk_rows: usize) -> Result<Vec<i32>> {
    expect_rank(op, "h", h, 2)?;
    expect_rank(op, "W", w, 2)?;
    let (t, v) = (h.dims()[0], w.dims()[0]);
    if w.dims()[1] != h.dims()[1] {
        return Err(shape_err!(op, "h is {} but W is {}: their last dims differ", h.shape(), w.shape()));
    }
    expect_dims(op, "ids", ids, &[t])?;
    if chunk_rows == 0 {
        return Err(arg_err!(op, "chunk_rows must be at least 1"));
    }
    let ids = host_i32(ids, op, "ids")?.into_owned();
    if let Some((row, &l)) = ids.iter().enumerate().find(|&(_, &l)| !(l >= 0 && (l as usize) < v)) {
        return Err(arg_err!(op, "ids[{row}] = {l} is outside 0..{v}"));
    }
    Ok(ids)
}

fn check_temperature(op: &'static str, temperature: f32) -> Result<()> {
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(arg_err!(op, "temperature must be positive and finite, got {temperature}"));
    }
    Ok(())
}

/// Log-probabilities of chosen tokens under `logits = h·Wᵀ` (`h: [T, D]`, `W: [V, D]`)
/// at `temperature`, `chunk_rows` rows of logits at a time: GRPO's policy,
/// rollout and reference log-probs without a `[T, V]` tensor. `h` holds only
/// the rows that are scored (the response positions), not the prompt's.
pub fn linear_token_logprobs(
    h: &Tensor,
    w: &Tensor,
    ids: &Tensor,
    temperature: f32,
    chunk_rows: usize,
    with_entropy: bool,
) -> Result<LinearTokenLogprobs> {
    let _profile = super::profile::scope("loss", "linear_token_logprobs");
    const OP: &str = "linear_token_logprobs";
    // Read by the CUDA arm only; checked in every build.
    #[cfg_attr(not(actial_cuda), allow(unused_variables))]
    let lab = check_linear_ids(OP, h, w, ids, chunk_rows)?;
    check_temperature(OP, temperature)?;
    let t = h.dims()[0];
    match common_device(OP, &[h, w])? {
        Device::Cpu => {
            let (mut logp, mut lse, mut entropy) = (Vec::with_capacity(t), Vec::with_capacity(t), Vec::new());
            let mut r0 = 0;
            while r0 < t {
                let rows = chunk_rows.min(t - r0);
                let logits = super::linear(&h.narrow(0, r0, rows)?, w, None)?;
                let (lp, ls) = token_logprobs(&logits, &ids.narrow(0, r0, rows)?, temperature)?;
                logp.extend(lp.to_vec_f32()?);
                lse.extend(ls.to_vec_f32()?);
                if with_entropy {
                    let v = w.dims()[0];
                    entropy.extend(k::row_entropy(&logits.f32_cow(OP, "logits")?, v, 1.0 / temperature));
                }
                r0 += rows;
            }
            Ok(LinearTokenLogprobs {
                logp: cpu_f32(logp, [t])?,
                lse: cpu_f32(lse, [t])?,
                entropy: if with_entropy { Some(cpu_f32(entropy, [t])?) } else { None },
            })
        }
        Device::Cuda(_) => cuda::linear_token_logprobs(h, w, &lab, temperature, chunk_rows, with_entropy),
    }
}

/// Backward of [`linear_token_logprobs`] given `dlogp: [T]`: returns `dh` and
/// accumulates `dW += dlogitsᵀ·h` when `dw` is given; each chunk's logits are
/// recomputed.
#[allow(clippy::too_many_arguments)]
pub fn linear_token_logprobs_backward(
    h: &Tensor,
    w: &Tensor,
    ids: &Tensor,
    lse: &Tensor,
    dlogp: &Tensor,
    temperature: f32,
    mut dw: Option<&mut Tensor>,
    chunk_rows: usize,
) -> Result<Tensor> {
    let _profile = super::profile::scope("loss", "linear_token_logprobs_backward");
    const OP: &str = "linear_token_logprobs_backward";
    // Read by the CUDA arm only; checked in every build.
    #[cfg_attr(not(actial_cuda), allow(unused_variables))]
    let lab = check_linear_ids(OP, h, w, ids, chunk_rows)?;
    check_temperature(OP, temperature)?;
    let (t, d) = (h.dims()[0], h.dims()[1]);
    expect_dims(OP, "lse", lse, &[t])?;
    expect_dims(OP, "dlogp", dlogp, &[t])?;
    match common_device(OP, &[h, w, lse, dlogp])? {
        Device::Cpu => {
            let mut dh = Vec::with_capacity(t.div_ceil(chunk_rows));
            let mut r0 = 0;
            while r0 < t {
                let rows = chunk_rows.min(t - r0);
                let h_c = h.narrow(0, r0, rows)?;
                let logits = super::linear(&h_c, w, None)?;
                let (ids_c, lse_c, dlogp_c) =
                    (ids.narrow(0, r0, rows)?, lse.narrow(0, r0, rows)?, dlogp.narrow(0, r0, rows)?);
                let dlogits = token_logprobs_backward(&logits, &ids_c, &lse_c, &dlogp_c, temperature)?;
                drop(logits);
                dh.push(super::linear_backward(&h_c, w, &dlogits, dw.as_deref_mut(), None)?);
                r0 += rows;
            }
            match dh.len() {
                0 => Tensor::zeros([0, d], h.dtype(), Device::Cpu),
                1 => Ok(dh.pop().expect("one chunk")),
                _ => Tensor::cat(&dh.iter().collect::<Vec<_>>(), 0),
            }
        }
        Device::Cuda(_) => cuda::linear_token_logprobs_backward(h, w, &lab, lse, dlogp, temperature, dw, chunk_rows),
    }
}

/// A micro-batch's response tokens as GRPO's objective needs them besides the
/// policy's log-probs (host; one upload on CUDA).
pub struct PolicyTokens<'a> {
    pub old: &'a [f32],
    pub reference: &'a [f32],
    pub advantage: &'a [f32],
    /// Each token's aggregation denominator (its loss counts `1 / den`).
    pub den: &'a [f32],
}

/// GRPO's objective on the policy's log-probs `logp: [T]` (f32): returns
/// `dloss/dlogp` `[T]` where `logp` is, and the sums the host reads (the loss
/// share, Σ k3, clipped tokens, Σ entropy when `entropy` is given). On CUDA
/// only those four numbers leave the device.
pub fn policy_loss(
    logp: &Tensor,
    entropy: Option<&Tensor>,
    tokens: &PolicyTokens,
    p: &k::PolicyLossParams,
) -> Result<(Tensor, k::PolicyLossSums)> {
    let _profile = super::profile::scope("loss", "policy_loss");
    const OP: &str = "policy_loss";
    expect_rank(OP, "logp", logp, 1)?;
    let t = logp.dims()[0];
    for (what, v) in
        [("old", tokens.old), ("reference", tokens.reference), ("advantage", tokens.advantage), ("den", tokens.den)]
    {
        if v.len() != t {
            return Err(crate::arg_err!(OP, "{what} has {} values for {t} log-probs", v.len()));
        }
    }
    if let Some(e) = entropy {
        expect_dims(OP, "entropy", e, &[t])?;
    }
    let mut all = vec![logp];
    all.extend(entropy);
    if t == 0 {
        return Ok((
            Tensor::zeros([0], crate::tensor::DType::F32, common_device(OP, &all)?)?,
            k::PolicyLossSums::default(),
        ));
    }
    match common_device(OP, &all)? {
        Device::Cpu => {
            let e = entropy.map(|e| e.f32_cow(OP, "entropy")).transpose()?;
            let (d, sums) = k::policy_loss(
                &logp.f32_cow(OP, "logp")?,
                tokens.old,
                tokens.reference,
                tokens.advantage,
                tokens.den,
                e.as_deref(),
                p,
            );
            Ok((cpu_f32(d, [t])?, sums))
        }
        Device::Cuda(_) => cuda::policy_loss(logp, entropy, tokens, p),
    }
}
