//! Varlen attention against a naive f64 implementation: ragged cu_seqlens
//! (including an empty segment and one of a single token), GQA, causal and
//! bidirectional, the real head dims (80 vision, 128 text).

mod common;
use actial::ops::{self, AttnSpec};
use actial::{Device, Tensor};
use common::*;

/// Naive reference: for each segment, head and query, an explicit softmax in f64.
/// Returns (out, lse).
fn reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    cu: &[usize],
    hq: usize,
    hkv: usize,
    d: usize,
    scale: f64,
    causal: bool,
) -> (Vec<f64>, Vec<f64>) {
    let t = *cu.last().unwrap();
    let mut out = vec![0.0f64; t * hq * d];
    let mut lse = vec![0.0f64; t * hq];
    for w in cu.windows(2) {
        for h in 0..hq {
            let g = h * hkv / hq;
            for i in w[0]..w[1] {
                let keys: Vec<usize> = (w[0]..w[1]).filter(|&j| !causal || j <= i).collect();
                let s: Vec<f64> = keys
                    .iter()
                    .map(|&j| {
                        (0..d).map(|p| q[(i * hq + h) * d + p] as f64 * k[(j * hkv + g) * d + p] as f64).sum::<f64>()
                            * scale
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                lse[i * hq + h] = m + z.ln();
                for (n, &j) in keys.iter().enumerate() {
                    let p = (s[n] - m).exp() / z;
                    for c in 0..d {
                        out[(i * hq + h) * d + c] += p * v[(j * hkv + g) * d + c] as f64;
                    }
                }
            }
        }
    }
    (out, lse)
}

fn check(seed: u64, cu: Vec<i32>, hq: usize, hkv: usize, d: usize, causal: bool) {
    let t = *cu.last().unwrap() as usize;
    let (q, k, v) =
        (randn(seed, &[t, hq, d], 1.0), randn(seed + 1, &[t, hkv, d], 1.0), randn(seed + 2, &[t, hkv, d], 1.0));
    let scale = (d as f32).powf(-0.5);
    let cu_host: Vec<usize> = cu.iter().map(|&x| x as usize).collect();
    let fwd = ops::attention(&q, &k, &v, &ids(cu.clone()), AttnSpec { scale, causal }).unwrap();
    let (ro, rl) = reference(&vec_of(&q), &vec_of(&k), &vec_of(&v), &cu_host, hq, hkv, d, scale as f64, causal);
    let ro: Vec<f32> = ro.iter().map(|&x| x as f32).collect();
    let rl: Vec<f32> = rl.iter().map(|&x| x as f32).collect();
    let eo = max_rel_err(&vec_of(&fwd.out), &ro, 1e-2);
    let el = max_rel_err(&vec_of(&fwd.lse), &rl, 1e-3);
    assert!(eo < 1e-4 && el < 1e-5, "cu {cu:?} hq {hq} hkv {hkv} d {d} causal {causal}: out err {eo}, lse err {el}");
}

#[test]
fn matches_naive_on_ragged_segments_with_gqa() {
    for causal in [false, true] {
        check(1, vec![0, 5, 5, 18, 19], 6, 2, 16, causal);
        check(2, vec![0, 1, 2, 3], 4, 4, 8, causal);
        check(3, vec![0, 31], 3, 1, 7, causal);
    }
}

#[test]
fn matches_naive_at_model_head_dims_and_long_segments() {
    // Vision: head dim 80, bidirectional windows of 64 plus a longer full segment.
    check(10, vec![0, 64, 128, 160, 300], 4, 4, 80, false);
    // Text: head dim 128, causal GQA 8:2 across several 64-query blocks.
    check(20, vec![0, 200, 203], 8, 2, 128, true);
}

#[test]
fn naive_cpu_baseline_agrees() {
    // The benches' naive baseline computes the same function as the fast path.
    let (t, hq, hkv, d) = (40, 4, 2, 8);
    let (q, k, v) = (randn(7, &[t, hq, d], 1.0), randn(8, &[t, hkv, d], 1.0), randn(9, &[t, hkv, d], 1.0));
    let cu = vec![0usize, 17, 40];
    let shape = actial::cpu::attention::AttnShape { q_heads: hq, kv_heads: hkv, head_dim: d, scale: 0.3, causal: true };
    let naive = actial::cpu::attention::attention_naive(&vec_of(&q), &vec_of(&k), &vec_of(&v), &cu, &shape);
    let (fast, _) = actial::cpu::attention::attention_forward(&vec_of(&q), &vec_of(&k), &vec_of(&v), &cu, &shape);
    assert!(max_rel_err(&naive, &fast, 1e-3) < 1e-4);
}

#[test]
fn rejects_bad_segments_and_head_counts() {
    let q = randn(1, &[10, 4, 8], 1.0);
    let k = randn(2, &[10, 3, 8], 1.0);
    let spec = AttnSpec { scale: 1.0, causal: true };
    let e = ops::attention(&q, &k, &k, &ids(vec![0, 10]), spec).err().expect("GQA 4:3 must fail").to_string();
    assert!(e.contains("attention") && e.contains("multiple of kv heads"), "{e}");
    let k = randn(2, &[10, 2, 8], 1.0);
    for bad in [vec![0, 9], vec![1, 10], vec![0, 6, 4, 10]] {
        let e =
            ops::attention(&q, &k, &k, &ids(bad.clone()), spec).err().expect("bad cu_seqlens must fail").to_string();
        assert!(e.contains("cu_seqlens"), "{bad:?}: {e}");
    }
}

#[test]
fn kv_attention_equals_the_tail_of_full_attention() {
    // Two sequences of 70 and 9 keys; the last 3 and 1 positions as queries.
    let (hq, hkv, d) = (4, 2, 8);
    let lens = [70usize, 9];
    let tails = [3usize, 1];
    let t: usize = lens.iter().sum();
    let (q, k, v) = (randn(1, &[t, hq, d], 1.0), randn(2, &[t, hkv, d], 1.0), randn(3, &[t, hkv, d], 1.0));
    let spec = AttnSpec { scale: 0.35, causal: true };
    let full = vec_of(&ops::attention(&q, &k, &v, &ids(vec![0, 70, 79]), spec).unwrap().out);
    let rows: Vec<usize> = vec![67, 68, 69, 78];
    let qv = vec_of(&q);
    let qt: Vec<f32> = rows.iter().flat_map(|&r| qv[r * hq * d..(r + 1) * hq * d].to_vec()).collect();
    let qt = actial::Tensor::from_f32(qt, [4, hq, d], actial::Device::Cpu).unwrap();
    let cu_q = ids(vec![0, tails[0] as i32, (tails[0] + tails[1]) as i32]);
    let cu_k = ids(vec![0, 70, 79]);
    let out = vec_of(&ops::attention_kv(&qt, &k, &v, &cu_q, &cu_k, spec).unwrap().out);
    for (i, &r) in rows.iter().enumerate() {
        let want = &full[r * hq * d..(r + 1) * hq * d];
        let got = &out[i * hq * d..(i + 1) * hq * d];
        let e = max_rel_err(got, want, 1e-2);
        assert!(e < 1e-4, "row {r}: {e}");
    }
    // More queries than keys is an error.
    assert!(
        ops::attention_kv(
            &q,
            &qt.reshape([4, 2, 16]).unwrap(),
            &qt.reshape([4, 2, 16]).unwrap(),
            &ids(vec![0, 79]),
            &ids(vec![0, 4]),
            spec
        )
        .is_err()
    );
}

/// Bidirectional segments may have more queries than keys (the shared prompt
/// prefix of a GRPO group wider than the cascade kernel): each query's softmax
/// runs over every key of its segment, which an f64 loop recomputes.
#[test]
fn bidirectional_kv_attention_allows_more_queries_than_keys() {
    let (hq, hkv, d) = (4, 2, 8);
    let (cu_q, cu_k) = (vec![0usize, 33, 35], vec![0usize, 5, 12]);
    let (q, k, v) = (randn(7, &[35, hq, d], 1.0), randn(8, &[12, hkv, d], 1.0), randn(9, &[12, hkv, d], 1.0));
    let spec = AttnSpec { scale: 0.3, causal: false };
    let to_ids = |c: &[usize]| ids(c.iter().map(|&x| x as i32).collect());
    let got = ops::attention_kv(&q, &k, &v, &to_ids(&cu_q), &to_ids(&cu_k), spec).unwrap();
    let (qv, kv, vv, out, lse) = (vec_of(&q), vec_of(&k), vec_of(&v), vec_of(&got.out), vec_of(&got.lse));
    for seg in 0..2 {
        for i in cu_q[seg]..cu_q[seg + 1] {
            for h in 0..hq {
                let g = h * hkv / hq;
                let keys = cu_k[seg]..cu_k[seg + 1];
                let s: Vec<f64> = keys
                    .clone()
                    .map(|j| {
                        (0..d).map(|p| qv[(i * hq + h) * d + p] as f64 * kv[(j * hkv + g) * d + p] as f64).sum::<f64>()
                            * 0.3
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                assert!((lse[i * hq + h] as f64 - (m + z.ln())).abs() < 1e-4, "lse of query {i} head {h}");
                for c in 0..d {
                    let want: f64 =
                        keys.clone().zip(&s).map(|(j, &x)| (x - m).exp() / z * vv[(j * hkv + g) * d + c] as f64).sum();
                    assert!(
                        (out[(i * hq + h) * d + c] as f64 - want).abs() < 1e-4,
                        "out of query {i} head {h} col {c}"
                    );
                }
            }
        }
    }
    // Causal, the same offsets are refused: the queries would sit before the first key.
    let causal = AttnSpec { causal: true, ..spec };
    let e = ops::attention_kv(&q, &k, &v, &to_ids(&cu_q), &to_ids(&cu_k), causal)
        .err()
        .expect("causal must refuse")
        .to_string();
    assert!(e.contains("at least as many keys as queries"), "{e}");
}

#[test]
fn cascade_merge_equals_attention_over_all_keys() {
    // 3 queries (the last positions of a 40-token sequence) against a 25-key prefix
    // and a 15-key suffix, merged, equal attention over all 40 keys.
    let (hq, hkv, d) = (4, 2, 8);
    let (q, k, v) = (randn(1, &[3, hq, d], 1.0), randn(2, &[40, hkv, d], 1.0), randn(3, &[40, hkv, d], 1.0));
    let spec = AttnSpec { scale: 0.3, causal: true };
    let full = ops::attention_kv(&q, &k, &v, &ids(vec![0, 3]), &ids(vec![0, 40]), spec).unwrap();
    let bidir = AttnSpec { causal: false, ..spec };
    let pre = ops::attention_kv(
        &q,
        &k.narrow(0, 0, 25).unwrap(),
        &v.narrow(0, 0, 25).unwrap(),
        &ids(vec![0, 3]),
        &ids(vec![0, 25]),
        bidir,
    )
    .unwrap();
    let suf = ops::attention_kv(
        &q,
        &k.narrow(0, 25, 15).unwrap(),
        &v.narrow(0, 25, 15).unwrap(),
        &ids(vec![0, 3]),
        &ids(vec![0, 15]),
        spec,
    )
    .unwrap();
    let merged = ops::merge_attention(&pre, &suf).unwrap();
    assert!(max_rel_err(&vec_of(&merged.out), &vec_of(&full.out), 1e-2) < 1e-4);
    assert!(max_rel_err(&vec_of(&merged.lse), &vec_of(&full.lse), 1e-2) < 1e-5);
}

#[test]
fn merging_with_a_side_that_saw_no_keys_keeps_the_other_and_two_empty_sides_give_zero() {
    let (t, h, d) = (3, 1, 4);
    let out_a = Tensor::from_f32((0..12).map(|i| i as f32).collect(), [t, h, d], Device::Cpu).unwrap();
    let out_b = Tensor::from_f32(vec![0.0; 12], [t, h, d], Device::Cpu).unwrap();
    let ninf = f32::NEG_INFINITY;
    // Row 0: both sides have keys; row 1: only a; row 2: neither.
    let lse_a = Tensor::from_f32(vec![0.5, 2.0, ninf], [t, h], Device::Cpu).unwrap();
    let lse_b = Tensor::from_f32(vec![0.5, ninf, ninf], [t, h], Device::Cpu).unwrap();
    let m = ops::merge_attention(&ops::AttnOut { out: out_a, lse: lse_a }, &ops::AttnOut { out: out_b, lse: lse_b })
        .unwrap();
    let (out, lse) = (vec_of(&m.out), vec_of(&m.lse));
    // Equal lse: the plain average, and lse + ln 2.
    assert_eq!(&out[0..4], &[0.0, 0.5, 1.0, 1.5]);
    assert!((lse[0] - (0.5 + 2f32.ln())).abs() < 1e-6);
    assert_eq!(&out[4..8], &[4.0, 5.0, 6.0, 7.0]);
    assert_eq!(lse[1], 2.0);
    assert_eq!(&out[8..12], &[0.0; 4]);
    assert_eq!(lse[2], ninf);
}
