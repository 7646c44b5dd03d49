//! Sampling, checked statistically: filters never choose outside their allowed
//! set, and frequencies match the target distribution for a fixed seed.

mod common;
use actial::ops::{self, SamplingParams};
use actial::{Device, Tensor};
use common::*;

fn row(logits: &[f32]) -> Tensor {
    Tensor::from_f32(logits.to_vec(), [1, logits.len()], Device::Cpu).unwrap()
}

fn counts(tokens: &Tensor, v: usize) -> Vec<usize> {
    let mut c = vec![0; v];
    for t in tokens.to_vec_i32().unwrap() {
        c[t as usize] += 1;
    }
    c
}

/// Each frequency within 5 standard errors of its probability, and Pearson's
/// chi-square below the 99.9% quantile for `v - 1` degrees of freedom (bound given).
fn assert_matches(c: &[usize], probs: &[f64], chi2_bound: f64) {
    let n: usize = c.iter().sum();
    let mut chi2 = 0.0;
    for (i, (&ci, &p)) in c.iter().zip(probs).enumerate() {
        let f = ci as f64 / n as f64;
        let se = (p * (1.0 - p) / n as f64).sqrt();
        if p == 0.0 {
            assert_eq!(ci, 0, "token {i} has probability 0 but was drawn {ci} times");
            continue;
        }
        assert!((f - p).abs() < 5.0 * se + 1e-9, "token {i}: frequency {f:.4} vs probability {p:.4}");
        chi2 += (ci as f64 - n as f64 * p).powi(2) / (n as f64 * p);
    }
    assert!(chi2 < chi2_bound, "chi-square {chi2:.2} >= {chi2_bound}");
}

fn softmax(l: &[f32], t: f32) -> Vec<f64> {
    let m = l.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let e: Vec<f64> = l.iter().map(|&x| ((x as f64 - m) / t as f64).exp()).collect();
    let z: f64 = e.iter().sum();
    e.iter().map(|x| x / z).collect()
}

const LOGITS: [f32; 6] = [1.0, 0.2, -0.5, 2.0, 0.0, -1.5];
const N: usize = 40_000;

#[test]
fn frequencies_match_the_tempered_softmax() {
    for t in [1.0f32, 0.5, 2.0] {
        let p = SamplingParams { temperature: t, top_k: 0, top_p: 1.0 };
        let (tok, _) = ops::sample(&row(&LOGITS), N, &p, 1234, 0).unwrap();
        // chi-square 99.9% quantile, 5 dof: 20.52
        assert_matches(&counts(&tok, 6), &softmax(&LOGITS, t), 20.52);
    }
}

#[test]
fn top_k_keeps_only_the_k_most_likely() {
    let p = SamplingParams { temperature: 1.0, top_k: 2, top_p: 1.0 };
    let (tok, _) = ops::sample(&row(&LOGITS), N, &p, 7, 0).unwrap();
    // Allowed: tokens 3 (2.0) and 0 (1.0), renormalised.
    let z = 2f64.exp() + 1f64.exp();
    let probs = [1f64.exp() / z, 0.0, 0.0, 2f64.exp() / z, 0.0, 0.0];
    assert_matches(&counts(&tok, 6), &probs, 10.83); // 1 dof
}

#[test]
fn top_p_keeps_the_smallest_nucleus() {
    // probabilities 0.5, 0.3, 0.1, 0.06, 0.04: top_p 0.75 keeps {0, 1} (0.5 < 0.75 <= 0.8).
    let probs = [0.5f32, 0.3, 0.1, 0.06, 0.04];
    let logits: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
    let p = SamplingParams { temperature: 1.0, top_k: 0, top_p: 0.75 };
    let (tok, _) = ops::sample(&row(&logits), N, &p, 99, 0).unwrap();
    assert_matches(&counts(&tok, 5), &[0.625, 0.375, 0.0, 0.0, 0.0], 10.83);
}

#[test]
fn top_k_then_top_p_on_the_renormalised_set() {
    // top_k 3 keeps {0.5, 0.3, 0.1} → renormalised {0.556, 0.333, 0.111}; top_p 0.85
    // then keeps the first two (0.556 < 0.85 <= 0.889).
    let probs = [0.1f32, 0.5, 0.06, 0.3, 0.04];
    let logits: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
    let p = SamplingParams { temperature: 1.0, top_k: 3, top_p: 0.85 };
    let (tok, _) = ops::sample(&row(&logits), N, &p, 5, 0).unwrap();
    assert_matches(&counts(&tok, 5), &[0.0, 0.625, 0.0, 0.375, 0.0], 10.83);
}

#[test]
fn filters_never_leave_their_set_on_random_rows() {
    let (rows, v) = (16, 300);
    let logits = randn(3, &[rows, v], 3.0);
    let lv = vec_of(&logits);
    let p = SamplingParams { temperature: 0.8, top_k: 7, top_p: 0.9 };
    let (tok, _) = ops::sample(&logits, 200, &p, 42, 0).unwrap();
    for (i, &t) in tok.to_vec_i32().unwrap().iter().enumerate() {
        let r = &lv[(i / 200) * v..(i / 200 + 1) * v];
        let rank = r.iter().filter(|&&x| x > r[t as usize]).count();
        assert!(rank < 7, "row {}: token {t} has rank {rank}, outside top-7", i / 200);
    }
}

#[test]
fn greedy_logprobs_and_determinism() {
    let logits = randn(4, &[5, 50], 2.0);
    let lv = vec_of(&logits);
    let greedy = SamplingParams { temperature: 0.0, ..SamplingParams::default() };
    let (tok, lp) = ops::sample(&logits, 3, &greedy, 1, 0).unwrap();
    let (tok, lp) = (tok.to_vec_i32().unwrap(), vec_of(&lp));
    for r in 0..5 {
        let row = &lv[r * 50..(r + 1) * 50];
        let best = (0..50).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
        let ls = softmax(row, 1.0);
        for j in 0..3 {
            assert_eq!(tok[r * 3 + j] as usize, best);
            assert!((lp[r * 3 + j] as f64 - ls[best].ln()).abs() < 1e-5);
        }
    }
    // Same seed, same draws; another seed, other draws. Log-probs are the tempered policy's.
    let p = SamplingParams { temperature: 0.7, top_k: 0, top_p: 0.95 };
    let (a, alp) = ops::sample(&logits, 4, &p, 77, 0).unwrap();
    let (b, _) = ops::sample(&logits, 4, &p, 77, 0).unwrap();
    let (c, _) = ops::sample(&logits, 4, &p, 78, 0).unwrap();
    assert_eq!(a.to_vec_i32().unwrap(), b.to_vec_i32().unwrap());
    assert_ne!(a.to_vec_i32().unwrap(), c.to_vec_i32().unwrap());
    for (i, (&t, &l)) in a.to_vec_i32().unwrap().iter().zip(&vec_of(&alp)).enumerate() {
        let ls = softmax(&lv[(i / 4) * 50..(i / 4 + 1) * 50], 0.7);
        assert!((l as f64 - ls[t as usize].ln()).abs() < 1e-4);
    }
}

#[test]
fn bad_parameters_are_errors() {
    let l = row(&LOGITS);
    let e = ops::sample(&l, 1, &SamplingParams { top_p: 0.0, ..Default::default() }, 0, 0).err().unwrap();
    assert!(e.to_string().contains("top_p"));
    let nan = row(&[0.0, f32::NAN]);
    let e = ops::sample(&nan, 1, &SamplingParams::default(), 0, 0).err().unwrap();
    assert!(e.to_string().contains("row 0") && e.to_string().contains("NaN"), "{e}");
}

/// Banned ids are never drawn, the rest keep their relative odds (the
/// renormalised softmax), and the recorded log-prob is the full row's, equal to
/// the teacher-forced one bit for bit.
#[test]
fn banned_ids_are_never_drawn_and_keep_the_full_logprob() {
    let p = SamplingParams::default();
    let streams: Vec<u64> = vec![0];
    // Token 3 (the most likely) and 0 banned; 99 is past the vocabulary (ignored).
    let banned = [3u32, 0, 99];
    let (tok, lp) = ops::sample_streams(&row(&LOGITS), N, &p, 11, &streams, &banned).unwrap();
    let mut c = vec![0; LOGITS.len()];
    for &t in &tok {
        c[t as usize] += 1;
    }
    let mut masked = softmax(&LOGITS, 1.0);
    masked[0] = 0.0;
    masked[3] = 0.0;
    let z: f64 = masked.iter().sum();
    let masked: Vec<f64> = masked.iter().map(|x| x / z).collect();
    assert_matches(&c, &masked, 20.5);
    let ids: Vec<i32> = tok.iter().map(|&t| t as i32).collect();
    let (teacher, _) = ops::token_logprobs(
        &Tensor::from_f32(LOGITS.repeat(N), [N, 6], Device::Cpu).unwrap(),
        &Tensor::from_i32(ids, [N], Device::Cpu).unwrap(),
        1.0,
    )
    .unwrap();
    assert_eq!(lp, teacher.to_vec_f32().unwrap(), "rollout log-probs are the teacher-forced ones");
    // Greedy takes the best allowed id.
    let greedy = SamplingParams { temperature: 0.0, ..Default::default() };
    let (tok, _) = ops::sample_streams(&row(&LOGITS), 2, &greedy, 1, &streams, &banned).unwrap();
    assert_eq!(tok, vec![1, 1]);
    // Banning everything is an error, not a draw.
    let all: Vec<u32> = (0..6).collect();
    let err = ops::sample_streams(&row(&LOGITS), 1, &p, 1, &streams, &all).unwrap_err().to_string();
    assert!(err.contains("every one of the 6 vocabulary ids is banned"), "{err}");
}
