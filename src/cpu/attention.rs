//! Variable-length multi-head attention over packed sequences.
//!
//! Layout: `q: [T, Hq, D]`, `k, v: [T, Hkv, D]` (GQA: query head `h` reads kv head
//! `h / (Hq / Hkv)`), `cu_seqlens = [0, l0, l0+l1, ..., T]`: tokens attend only
//! inside their own segment, bidirectionally (vision windows / images) or causally
//! (text). Softmax is f32 and exact per row: the forward saves the row
//! log-sum-exp `lse: [T, Hq]`, and the backward recomputes probabilities from it
//! (as FlashAttention does) instead of storing `[T, T]` matrices.
//!
//! Work is split into (segment, head, block of `Q_BLOCK` queries) tasks; scores for
//! one block are `Q_BLOCK x keys`, so memory stays bounded on long sequences.

use rayon::prelude::*;

use super::matmul::{MatRef, gemm_raw};
use super::{dot, exp_inplace, sum};

/// Queries per task. 64 keeps a block's score matrix small (64 x keys) while giving
/// the GEMMs enough rows.
const Q_BLOCK: usize = 64;

#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub q_heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub causal: bool,
}

impl AttnShape {
    fn kv_head(&self, h: usize) -> usize {
        h / (self.q_heads / self.kv_heads)
    }
    /// Keys a query block `[q0, q1)` of a segment of `len` tokens can see.
    fn key_count(&self, q1: usize, len: usize) -> usize {
        if self.causal { q1 } else { len }
    }
}

/// A strided `[rows, D]` view of one head inside a `[T, H, D]` buffer.
fn head_rows(buf: &[f32], first_row: usize, heads: usize, h: usize, d: usize, trans: bool) -> MatRef {
    let off = first_row * heads * d + h * d;
    assert!(off <= buf.len());
    let ptr = buf[off..].as_ptr();
    if trans {
        MatRef { ptr, rs: 1, cs: (heads * d) as isize }
    } else {
        MatRef { ptr, rs: (heads * d) as isize, cs: 1 }
    }
}

/// `s = scale · Q_blk · Kᵀ` for one head: `bq` query rows starting at buffer row
/// `q_row0`, `lk` key rows starting at `k_row0`. Returns `[bq, lk]`.
fn scores(
    q: &[f32],
    k: &[f32],
    s: &AttnShape,
    q_row0: usize,
    k_row0: usize,
    bq: usize,
    lk: usize,
    h: usize,
) -> Vec<f32> {
    let d = s.head_dim;
    // Bound checks for the raw GEMM below.
    assert!((q_row0 + bq) * s.q_heads * d <= q.len());
    assert!((k_row0 + lk) * s.kv_heads * d <= k.len());
    let mut out = vec![0.0f32; bq * lk];
    let a = head_rows(q, q_row0, s.q_heads, h, d, false);
    let b = head_rows(k, k_row0, s.kv_heads, s.kv_head(h), d, true);
    // SAFETY: bounds asserted above; `out` is local.
    unsafe { gemm_raw(bq, lk, d, a, b, out.as_mut_ptr(), lk, false, s.scale, false) };
    out
}

/// How many of a row's `lk` keys query `qi` (key-sequence position) sees: all of
/// them, or under a causal mask the first `qi + 1`.
#[inline]
fn visible_keys(causal: bool, qi: usize, lk: usize) -> usize {
    if causal { (qi + 1).min(lk) } else { lk }
}

struct FwdBlock {
    q_seg0: usize,
    q0: usize,
    h: usize,
    out: Vec<f32>,
    lse: Vec<f32>,
}

/// Forward. Returns `(out [T, Hq, D], lse [T, Hq])`.
pub fn attention_forward(q: &[f32], k: &[f32], v: &[f32], cu: &[usize], s: &AttnShape) -> (Vec<f32>, Vec<f32>) {
    attention_forward_kv(q, k, v, cu, cu, s)
}

/// Forward where queries and keys have their own segment offsets: segment `i` has
/// queries `cu_q[i]..cu_q[i+1]` and keys `cu_k[i]..cu_k[i+1]`, and the queries are
/// the *last* positions of the keys' sequence (causal masks align bottom-right, as
/// in FlashAttention). This is decoding against a KV cache; with `cu_q == cu_k` it
/// is ordinary varlen attention.
pub fn attention_forward_kv(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    cu_q: &[usize],
    cu_k: &[usize],
    s: &AttnShape,
) -> (Vec<f32>, Vec<f32>) {
    let (hq, d) = (s.q_heads, s.head_dim);
    assert_eq!(cu_q.len(), cu_k.len(), "one key segment per query segment");
    let t = *cu_q.last().unwrap_or(&0);
    let mut tasks = Vec::new();
    for (wq, wk) in cu_q.windows(2).zip(cu_k.windows(2)) {
        assert!(!s.causal || wk[1] - wk[0] >= wq[1] - wq[0], "a causal query segment is longer than its keys");
        for h in 0..hq {
            for q0 in (0..wq[1] - wq[0]).step_by(Q_BLOCK) {
                tasks.push((wq[0], wq[1] - wq[0], wk[0], wk[1] - wk[0], h, q0));
            }
        }
    }
    let blocks: Vec<FwdBlock> = tasks
        .into_par_iter()
        .map(|(q_seg0, q_len, k_seg0, k_len, h, q0)| {
            // Causal: query i sits at key position i + shift (unused without a mask).
            let shift = k_len.saturating_sub(q_len);
            let bq = Q_BLOCK.min(q_len - q0);
            let lk = s.key_count(q0 + bq + shift, k_len);
            let mut p = scores(q, k, s, q_seg0 + q0, k_seg0, bq, lk, h);
            let mut lse = vec![0.0f32; bq];
            for (i, row) in p.chunks_mut(lk).enumerate() {
                // Causal masks hide a suffix of keys: only the first `visible` count.
                let visible = visible_keys(s.causal, q0 + i + shift, lk);
                let (seen, hidden) = row.split_at_mut(visible);
                let max = seen.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                seen.iter_mut().for_each(|x| *x -= max);
                exp_inplace(seen);
                let total = sum(seen);
                let inv = 1.0 / total;
                seen.iter_mut().for_each(|x| *x *= inv);
                hidden.fill(0.0);
                lse[i] = max + total.ln();
            }
            let mut out = vec![0.0f32; bq * d];
            let a = MatRef { ptr: p.as_ptr(), rs: lk as isize, cs: 1 };
            assert!((k_seg0 + lk) * s.kv_heads * d <= v.len());
            let b = head_rows(v, k_seg0, s.kv_heads, s.kv_head(h), d, false);
            // SAFETY: `p` is `[bq, lk]`, V bounds asserted, `out` is local.
            unsafe { gemm_raw(bq, d, lk, a, b, out.as_mut_ptr(), d, false, 1.0, false) };
            FwdBlock { q_seg0, q0, h, out, lse }
        })
        .collect();
    let mut out = vec![0.0f32; t * hq * d];
    let mut lse = vec![0.0f32; t * hq];
    for b in blocks {
        for (i, row) in b.out.chunks(d).enumerate() {
            let r = b.q_seg0 + b.q0 + i;
            out[(r * hq + b.h) * d..(r * hq + b.h + 1) * d].copy_from_slice(row);
            lse[r * hq + b.h] = b.lse[i];
        }
    }
    (out, lse)
}

struct BwdSegment {
    seg0: usize,
    g: usize,
    dk: Vec<f32>,
    dv: Vec<f32>,
    /// (head, first query, rows of dq)
    dq: Vec<(usize, usize, Vec<f32>)>,
}

/// Backward. Given the forward's `out` and `lse` and the output gradient `dout`,
/// returns `(dq, dk, dv)`. With `P = softmax(S)`: `dV = Pᵀ·dO`, `dP = dO·Vᵀ`,
/// `dS = P∘(dP − rowsum(dO∘O))`, `dQ = scale·dS·K`, `dK = scale·dSᵀ·Q`.
/// Tasks are (segment, kv head) so each owns its rows of dK and dV.
pub fn attention_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    dout: &[f32],
    cu: &[usize],
    s: &AttnShape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (hq, hkv, d) = (s.q_heads, s.kv_heads, s.head_dim);
    let rep = hq / hkv;
    let t = *cu.last().unwrap_or(&0);
    assert!(out.len() == t * hq * d && dout.len() == t * hq * d && lse.len() == t * hq);
    let tasks: Vec<(usize, usize, usize)> =
        cu.windows(2).flat_map(|w| (0..hkv).map(move |g| (w[0], w[1] - w[0], g))).collect();
    let segs: Vec<BwdSegment> = tasks
        .into_par_iter()
        .map(|(seg0, len, g)| {
            let mut dk = vec![0.0f32; len * d];
            let mut dv = vec![0.0f32; len * d];
            let mut dqs = Vec::new();
            for h in g * rep..(g + 1) * rep {
                for q0 in (0..len).step_by(Q_BLOCK) {
                    let bq = Q_BLOCK.min(len - q0);
                    let lk = s.key_count(q0 + bq, len);
                    // P from the saved log-sum-exp.
                    let mut p = scores(q, k, s, seg0 + q0, seg0, bq, lk, h);
                    for (i, row) in p.chunks_mut(lk).enumerate() {
                        let l = lse[(seg0 + q0 + i) * hq + h];
                        let (seen, hidden) = row.split_at_mut(visible_keys(s.causal, q0 + i, lk));
                        seen.iter_mut().for_each(|x| *x -= l);
                        exp_inplace(seen);
                        hidden.fill(0.0);
                    }
                    let p_t = MatRef { ptr: p.as_ptr(), rs: 1, cs: lk as isize };
                    let do_rows = head_rows(dout, seg0 + q0, hq, h, d, false);
                    // SAFETY (all GEMMs below): operands are local buffers of the stated
                    // sizes or head views whose extents `scores` asserted for this block.
                    unsafe { gemm_raw(lk, d, bq, p_t, do_rows, dv.as_mut_ptr(), d, true, 1.0, false) };
                    let mut ds = vec![0.0f32; bq * lk];
                    let v_t = head_rows(v, seg0, hkv, g, d, true);
                    unsafe { gemm_raw(bq, lk, d, do_rows, v_t, ds.as_mut_ptr(), lk, false, 1.0, false) };
                    for (i, (dsr, pr)) in ds.chunks_mut(lk).zip(p.chunks(lk)).enumerate() {
                        let r = ((seg0 + q0 + i) * hq + h) * d;
                        let di = dot(&dout[r..r + d], &out[r..r + d]);
                        for (x, &pv) in dsr.iter_mut().zip(pr) {
                            *x = pv * (*x - di);
                        }
                    }
                    let ds_m = MatRef { ptr: ds.as_ptr(), rs: lk as isize, cs: 1 };
                    let ds_t = MatRef { ptr: ds.as_ptr(), rs: 1, cs: lk as isize };
                    let mut dq = vec![0.0f32; bq * d];
                    let k_rows = head_rows(k, seg0, hkv, g, d, false);
                    unsafe { gemm_raw(bq, d, lk, ds_m, k_rows, dq.as_mut_ptr(), d, false, s.scale, false) };
                    let q_rows = head_rows(q, seg0 + q0, hq, h, d, false);
                    unsafe { gemm_raw(lk, d, bq, ds_t, q_rows, dk.as_mut_ptr(), d, true, s.scale, false) };
                    dqs.push((h, q0, dq));
                }
            }
            BwdSegment { seg0, g, dk, dv, dq: dqs }
        })
        .collect();
    let mut dq = vec![0.0f32; t * hq * d];
    let mut dk = vec![0.0f32; t * hkv * d];
    let mut dv = vec![0.0f32; t * hkv * d];
    for sgm in segs {
        for (i, (rk, rv)) in sgm.dk.chunks(d).zip(sgm.dv.chunks(d)).enumerate() {
            let o = ((sgm.seg0 + i) * hkv + sgm.g) * d;
            dk[o..o + d].copy_from_slice(rk);
            dv[o..o + d].copy_from_slice(rv);
        }
        for (h, q0, rows) in sgm.dq {
            for (i, r) in rows.chunks(d).enumerate() {
                let o = ((sgm.seg0 + q0 + i) * hq + h) * d;
                dq[o..o + d].copy_from_slice(r);
            }
        }
    }
    (dq, dk, dv)
}

/// Single-threaded, loop-only attention that materialises every score row: the
/// benches' baseline.
pub fn attention_naive(q: &[f32], k: &[f32], v: &[f32], cu: &[usize], s: &AttnShape) -> Vec<f32> {
    let (hq, hkv, d) = (s.q_heads, s.kv_heads, s.head_dim);
    let mut out = vec![0.0f32; q.len()];
    for w in cu.windows(2) {
        for h in 0..hq {
            let g = s.kv_head(h);
            for i in w[0]..w[1] {
                let last = if s.causal { i + 1 } else { w[1] };
                let qi = &q[(i * hq + h) * d..(i * hq + h + 1) * d];
                let sc: Vec<f32> = (w[0]..last)
                    .map(|j| qi.iter().zip(&k[(j * hkv + g) * d..]).map(|(a, b)| a * b).sum::<f32>() * s.scale)
                    .collect();
                let m = sc.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let e: Vec<f32> = sc.iter().map(|x| (x - m).exp()).collect();
                let z: f32 = e.iter().sum();
                let o = &mut out[(i * hq + h) * d..(i * hq + h + 1) * d];
                for (jj, &p) in e.iter().enumerate() {
                    let vj = &v[((w[0] + jj) * hkv + g) * d..];
                    for (x, &vv) in o.iter_mut().zip(vj) {
                        *x += p / z * vv;
                    }
                }
            }
        }
    }
    out
}
