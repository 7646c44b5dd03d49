//! Variable-length attention over `cu_seqlens` segments (see `cpu::attention`).

use super::cuda;
use super::{common_device, cpu_f32, expect_dims, expect_rank, host_i32};
use crate::cpu::attention::{self as k, AttnShape};
use crate::error::Result;
use crate::tensor::{Device, Tensor};
use crate::{arg_err, shape_err};

/// What an attention call computes besides its tensors.
#[derive(Clone, Copy, Debug)]
pub struct AttnSpec {
    /// Multiplies `q·k` before the softmax (Qwen2.5-VL: head_dim^-0.5).
    pub scale: f32,
    /// Text (causal) or vision segments / windows (bidirectional).
    pub causal: bool,
}

/// Forward output: `out: [T, Hq, D]` and the per-row log-sum-exp `lse: [T, Hq]`
/// the backward needs.
pub struct AttnOut {
    pub out: Tensor,
    pub lse: Tensor,
}

/// Checks q/k/v and cu_seqlens; returns the kernel shape and host offsets.
fn attn_dims(
    op: &'static str,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cu: &Tensor,
    spec: &AttnSpec,
) -> Result<(AttnShape, Vec<usize>)> {
    expect_rank(op, "q", q, 3)?;
    expect_rank(op, "k", k, 3)?;
    let (t, hq, d) = (q.dims()[0], q.dims()[1], q.dims()[2]);
    let hkv = k.dims()[1];
    if k.dims()[0] != t || k.dims()[2] != d {
        return Err(shape_err!(op, "q {} and k {} disagree on tokens or head dim", q.shape(), k.shape()));
    }
    expect_dims(op, "v", v, k.dims())?;
    if hkv == 0 || hq % hkv != 0 {
        return Err(shape_err!(op, "q heads ({hq}) must be a multiple of kv heads ({hkv}) for GQA"));
    }
    let cu = cu_seqlens(op, cu, t)?;
    let shape = AttnShape { q_heads: hq, kv_heads: hkv, head_dim: d, scale: spec.scale, causal: spec.causal };
    Ok((shape, cu))
}

/// Reads and validates `cu_seqlens` (i32 `[S+1]`): starts at 0, never decreases,
/// ends at the token count.
pub fn cu_seqlens(op: &'static str, cu: &Tensor, tokens: usize) -> Result<Vec<usize>> {
    expect_rank(op, "cu_seqlens", cu, 1)?;
    let v = host_i32(cu, op, "cu_seqlens")?;
    let ok =
        v.first() == Some(&0) && v.windows(2).all(|w| w[0] <= w[1]) && v.last().map(|&l| l as usize) == Some(tokens);
    if !ok {
        return Err(arg_err!(op, "cu_seqlens {v:?} must start at 0, not decrease, and end at {tokens} tokens"));
    }
    Ok(v.iter().map(|&x| x as usize).collect())
}

/// (query, key) pairs a head scores over the segments of `cu` (for `ACTIAL_PROFILE`).
fn visible_pairs(cu: &[usize], s: &crate::cpu::attention::AttnShape) -> u64 {
    cu.windows(2)
        .map(|w| {
            let l = (w[1] - w[0]) as u64;
            if s.causal { l * (l + 1) / 2 } else { l * l }
        })
        .sum()
}

/// `softmax(scale·q·kᵀ + mask)·v` inside each segment, GQA over kv heads.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, cu: &Tensor, spec: AttnSpec) -> Result<AttnOut> {
    let mut profile = super::profile::scope("attention", "attention");
    const OP: &str = "attention";
    let (shape, cu) = attn_dims(OP, q, k, v, cu, &spec)?;
    // q·kᵀ and p·v: 2 multiply-adds per visible (query, key) pair and head dim.
    let (pairs, tokens) = (visible_pairs(&cu, &shape), *cu.last().unwrap_or(&0) as u64);
    let (h, kvh, d) = (shape.q_heads as u64, shape.kv_heads as u64, shape.head_dim as u64);
    super::profile::work(&mut profile, 4 * pairs * h * d, 4 * tokens * (2 * h + 2 * kvh) * d);
    match common_device(OP, &[q, k, v])? {
        Device::Cpu => {
            let (out, lse) =
                k::attention_forward(&q.f32_cow(OP, "q")?, &k.f32_cow(OP, "k")?, &v.f32_cow(OP, "v")?, &cu, &shape);
            Ok(AttnOut { out: cpu_f32(out, q.dims())?, lse: cpu_f32(lse, [q.dims()[0], q.dims()[1]])? })
        }
        Device::Cuda(_) => cuda::attention(q, k, v, &cu, &shape),
    }
}

/// Backward of [`attention`]: `(dq, dk, dv)` from the forward's output and lse.
pub fn attention_backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cu: &Tensor,
    spec: AttnSpec,
    fwd: &AttnOut,
    dout: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let mut profile = super::profile::scope("attention", "attention_backward");
    const OP: &str = "attention_backward";
    let (shape, cu) = attn_dims(OP, q, k, v, cu, &spec)?;
    // Scores again, then dV, dP, dQ and dK: 5 products per visible pair.
    let (pairs, tokens) = (visible_pairs(&cu, &shape), *cu.last().unwrap_or(&0) as u64);
    let (h, kvh, d) = (shape.q_heads as u64, shape.kv_heads as u64, shape.head_dim as u64);
    super::profile::work(&mut profile, 10 * pairs * h * d, 4 * tokens * (4 * h + 4 * kvh) * d);
    expect_dims(OP, "out", &fwd.out, q.dims())?;
    expect_dims(OP, "dout", dout, q.dims())?;
    expect_dims(OP, "lse", &fwd.lse, &[q.dims()[0], q.dims()[1]])?;
    match common_device(OP, &[q, k, v, &fwd.out, &fwd.lse, dout])? {
        Device::Cpu => {
            let (dq, dk, dv) = k::attention_backward(
                &q.f32_cow(OP, "q")?,
                &k.f32_cow(OP, "k")?,
                &v.f32_cow(OP, "v")?,
                &fwd.out.f32_cow(OP, "out")?,
                &fwd.lse.f32_cow(OP, "lse")?,
                &dout.f32_cow(OP, "dout")?,
                &cu,
                &shape,
            );
            Ok((cpu_f32(dq, q.dims())?, cpu_f32(dk, k.dims())?, cpu_f32(dv, v.dims())?))
        }
        Device::Cuda(_) => cuda::attention_backward(q, k, v, fwd, dout, &cu, &shape),
    }
}

/// Forward-only attention of queries against longer key/value sequences (a KV
/// cache): segment `i` pairs queries `cu_q[i]..cu_q[i+1]` with keys
/// `cu_k[i]..cu_k[i+1]`, the queries being the last positions of that sequence
/// (causal masks align bottom-right, so a causal segment needs at least as many
/// keys as queries; a bidirectional one may have fewer). Used for decoding.
pub fn attention_kv(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cu_q: &Tensor,
    cu_k: &Tensor,
    spec: AttnSpec,
) -> Result<AttnOut> {
    let mut profile = super::profile::scope("attention", "attention_kv");
    const OP: &str = "attention_kv";
    expect_rank(OP, "q", q, 3)?;
    expect_rank(OP, "k", k, 3)?;
    expect_dims(OP, "v", v, k.dims())?;
    let (tq, hq, d) = (q.dims()[0], q.dims()[1], q.dims()[2]);
    let (tk, hkv) = (k.dims()[0], k.dims()[1]);
    if k.dims()[2] != d || hkv == 0 || hq % hkv != 0 {
        return Err(shape_err!(
            OP,
            "q {} and k {} need one head dim and q heads a multiple of kv heads",
            q.shape(),
            k.shape()
        ));
    }
    let cq = cu_seqlens(OP, cu_q, tq)?;
    let ck = cu_seqlens(OP, cu_k, tk)?;
    // A causal segment's queries are the last positions of its keys, so it
    // cannot have more queries than keys; bidirectional ones (a shared prompt
    // prefix seen by a whole GRPO group) can.
    let longer = |(a, b): (&[usize], &[usize])| a[1] - a[0] > b[1] - b[0];
    if cq.len() != ck.len() || (spec.causal && cq.windows(2).zip(ck.windows(2)).any(longer)) {
        return Err(arg_err!(
            OP,
            "cu_q {cq:?} and cu_k {ck:?} must pair segments, each causal one with at least as many keys as queries"
        ));
    }
    let shape = AttnShape { q_heads: hq, kv_heads: hkv, head_dim: d, scale: spec.scale, causal: spec.causal };
    // Pairs each query sees: all keys, less the later queries' keys when causal.
    let pairs: u64 = cq
        .windows(2)
        .zip(ck.windows(2))
        .map(|(a, b)| {
            let (lq, lk) = ((a[1] - a[0]) as u64, (b[1] - b[0]) as u64);
            if spec.causal { lq * lk - lq * lq.saturating_sub(1) / 2 } else { lq * lk }
        })
        .sum();
    let (h, kvh, dd) = (hq as u64, hkv as u64, d as u64);
    super::profile::work(&mut profile, 4 * pairs * h * dd, 4 * (2 * tq as u64 * h + 2 * tk as u64 * kvh) * dd);
    match common_device(OP, &[q, k, v])? {
        Device::Cpu => {
            let (out, lse) = k::attention_forward_kv(
                &q.f32_cow(OP, "q")?,
                &k.f32_cow(OP, "k")?,
                &v.f32_cow(OP, "v")?,
                &cq,
                &ck,
                &shape,
            );
            Ok(AttnOut { out: cpu_f32(out, q.dims())?, lse: cpu_f32(lse, [tq, hq])? })
        }
        Device::Cuda(_) => cuda::attention_kv(q, k, v, &cq, &ck, &shape),
    }
}

/// Merges two attentions of the same queries over disjoint key sets (cascade
/// attention: a shared prompt prefix and each sample's own suffix) into the
/// attention over their union: `out = (o₁·e^{l₁} + o₂·e^{l₂}) / (e^{l₁} + e^{l₂})`
/// per query and head, `lse = log(e^{l₁} + e^{l₂})`.
pub fn merge_attention(a: &AttnOut, b: &AttnOut) -> Result<AttnOut> {
    let _profile = super::profile::scope("attention", "merge_attention");
    const OP: &str = "merge_attention";
    expect_dims(OP, "b.out", &b.out, a.out.dims())?;
    expect_dims(OP, "b.lse", &b.lse, a.lse.dims())?;
    expect_rank(OP, "a.out", &a.out, 3)?;
    let (t, h, d) = (a.out.dims()[0], a.out.dims()[1], a.out.dims()[2]);
    match common_device(OP, &[&a.out, &b.out, &a.lse, &b.lse])? {
        Device::Cpu => {
            let (oa, ob) = (a.out.f32_cow(OP, "a.out")?, b.out.f32_cow(OP, "b.out")?);
            let (la, lb) = (a.lse.f32_cow(OP, "a.lse")?, b.lse.f32_cow(OP, "b.lse")?);
            let mut out = vec![0.0f32; t * h * d];
            let mut lse = vec![0.0f32; t * h];
            for r in 0..t * h {
                // Both sides empty (lse -inf): out 0, lse -inf, and no NaN from -inf - -inf.
                let m = la[r].max(lb[r]);
                let base = if m == f32::NEG_INFINITY { 0.0 } else { m };
                let (wa, wb) = ((la[r] - base).exp(), (lb[r] - base).exp());
                let z = wa + wb;
                let inv = if z > 0.0 { 1.0 / z } else { 0.0 };
                lse[r] = base + z.ln();
                for c in 0..d {
                    out[r * d + c] = (oa[r * d + c] * wa + ob[r * d + c] * wb) * inv;
                }
            }
            Ok(AttnOut { out: cpu_f32(out, [t, h, d])?, lse: cpu_f32(lse, [t, h])? })
        }
        Device::Cuda(_) => cuda::merge_attention(a, b),
    }
}
