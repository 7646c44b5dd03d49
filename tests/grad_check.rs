//! Verification ladder, rung 1: every CPU backward against central finite
//! differences, on random shapes including odd sizes.

mod common;
use actial::ops::{self, AttnSpec};
use actial::{Device, Tensor};
use common::*;

#[test]
fn fd_checker_catches_a_wrong_gradient() {
    // The checker itself must be able to fail: a 5% error in one coordinate of an
    // otherwise exact gradient of Σ x³ is reported.
    let x: Vec<f32> = vec![0.3, -1.2, 0.7, 2.0];
    let loss = |v: &[f32]| v.iter().map(|&a| (a as f64).powi(3)).sum::<f64>();
    let mut g: Vec<f32> = x.iter().map(|a| 3.0 * a * a).collect();
    assert!(fd_mismatches(&x, &g, &loss, 1e-2, 64).is_empty());
    g[3] *= 1.05;
    assert_eq!(fd_mismatches(&x, &g, &loss, 1e-2, 64).len(), 1);
}

#[test]
fn matmul_backward_all_transposes_and_batched() {
    for (case, &(batch, m, k, n)) in [(0, 3, 5, 7), (3, 4, 9, 2), (0, 1, 1, 1), (2, 17, 3, 5)].iter().enumerate() {
        for ta in [false, true] {
            for tb in [false, true] {
                let mut ad = if ta { vec![k, m] } else { vec![m, k] };
                let mut bd = if tb { vec![n, k] } else { vec![k, n] };
                let mut cd = vec![m, n];
                if batch > 0 {
                    for d in [&mut ad, &mut bd, &mut cd] {
                        d.insert(0, batch);
                    }
                }
                let s = case as u64 * 10;
                let (a, b, r) = (randn(s + 1, &ad, 1.0), randn(s + 2, &bd, 1.0), randn(s + 3, &cd, 1.0));
                let (da, db) = ops::matmul_backward(&a, &b, ta, tb, &r).unwrap();
                let rv = vec_of(&r);
                let la = |v: &[f32]| dot(&vec_of(&ops::matmul(&like(&a, v), &b, ta, tb).unwrap()), &rv);
                let lb = |v: &[f32]| dot(&vec_of(&ops::matmul(&a, &like(&b, v), ta, tb).unwrap()), &rv);
                let tag = format!("matmul {ad:?}x{bd:?} ta={ta} tb={tb}");
                assert_grad(&format!("{tag} dA"), &vec_of(&a), &vec_of(&da), &la);
                assert_grad(&format!("{tag} dB"), &vec_of(&b), &vec_of(&db), &lb);
            }
        }
    }
}

#[test]
fn linear_backward_with_and_without_bias() {
    for (seed, dims, din, dout) in [(1u64, vec![5usize], 7usize, 3usize), (2, vec![2, 3], 4, 9)] {
        let mut xd = dims.clone();
        xd.push(din);
        let mut yd = dims.clone();
        yd.push(dout);
        let (x, w, b, r) = (
            randn(seed, &xd, 1.0),
            randn(seed + 1, &[dout, din], 0.5),
            randn(seed + 2, &[dout], 1.0),
            randn(seed + 3, &yd, 1.0),
        );
        let rv = vec_of(&r);
        for bias in [None, Some(&b)] {
            let mut dw = Tensor::zeros([dout, din], actial::DType::F32, Device::Cpu).unwrap();
            let mut db = Tensor::zeros([dout], actial::DType::F32, Device::Cpu).unwrap();
            let dx = ops::linear_backward(&x, &w, &r, Some(&mut dw), bias.map(|_| &mut db)).unwrap();
            let lx = |v: &[f32]| dot(&vec_of(&ops::linear(&like(&x, v), &w, bias).unwrap()), &rv);
            let lw = |v: &[f32]| dot(&vec_of(&ops::linear(&x, &like(&w, v), bias).unwrap()), &rv);
            assert_grad("linear dx", &vec_of(&x), &vec_of(&dx), &lx);
            assert_grad("linear dW", &vec_of(&w), &vec_of(&dw), &lw);
            if bias.is_some() {
                let lb = |v: &[f32]| dot(&vec_of(&ops::linear(&x, &w, Some(&like(&b, v))).unwrap()), &rv);
                assert_grad("linear db", &vec_of(&b), &vec_of(&db), &lb);
            }
        }
    }
}

#[test]
fn linear_backward_accumulates_into_parameter_grads() {
    let (x, w, r) = (randn(1, &[4, 3], 1.0), randn(2, &[5, 3], 1.0), randn(3, &[4, 5], 1.0));
    let mut once = Tensor::zeros([5, 3], actial::DType::F32, Device::Cpu).unwrap();
    ops::linear_backward(&x, &w, &r, Some(&mut once), None).unwrap();
    let mut twice = once.clone();
    ops::linear_backward(&x, &w, &r, Some(&mut twice), None).unwrap();
    let (o, t) = (vec_of(&once), vec_of(&twice));
    assert!(o.iter().zip(&t).all(|(a, b)| (2.0 * a - b).abs() < 1e-5));
    // The clone shared storage with `once`; copy-on-write kept `once` unchanged.
    assert_eq!(vec_of(&once), o);
}

#[test]
fn rms_norm_backward() {
    for (seed, rows, d) in [(1u64, 3usize, 8usize), (2, 5, 13), (3, 40, 3)] {
        let (x, w, r) = (randn(seed, &[rows, d], 1.0), randn(seed + 1, &[d], 1.0), randn(seed + 2, &[rows, d], 1.0));
        let (_, rstd) = ops::rms_norm(&x, &w, 1e-6).unwrap();
        let mut dw = Tensor::zeros([d], actial::DType::F32, Device::Cpu).unwrap();
        let dx = ops::rms_norm_backward(&x, &w, &rstd, &r, Some(&mut dw)).unwrap();
        let rv = vec_of(&r);
        let lx = |v: &[f32]| dot(&vec_of(&ops::rms_norm(&like(&x, v), &w, 1e-6).unwrap().0), &rv);
        let lw = |v: &[f32]| dot(&vec_of(&ops::rms_norm(&x, &like(&w, v), 1e-6).unwrap().0), &rv);
        assert_grad("rms_norm dx", &vec_of(&x), &vec_of(&dx), &lx);
        assert_grad("rms_norm dw", &vec_of(&w), &vec_of(&dw), &lw);
    }
}

#[test]
fn rope_backward_vision_and_mrope_tables() {
    // Vision: 2D rotary over a 4x6 patch grid, head dim 8, 3 heads.
    let pos = ops::vision_patch_positions(&[[1, 4, 6]], 2).unwrap();
    let (cos, sin) = ops::vision_rope_table(&pos, 8, 10000.0, Device::Cpu).unwrap();
    let x = randn(5, &[24, 3, 8], 1.0);
    let r = randn(6, &[24, 3, 8], 1.0);
    let dx = ops::rope_backward(&r, &cos, &sin).unwrap();
    let rv = vec_of(&r);
    let l = |v: &[f32]| dot(&vec_of(&ops::rope(&like(&x, v), &cos, &sin).unwrap()), &rv);
    assert_grad("vision rope", &vec_of(&x), &vec_of(&dx), &l);

    // M-RoPE with distinct t/h/w positions, head dim 12, sections [2, 2, 2].
    let t = 7;
    let p: Vec<i32> = (0..3 * t as i32).map(|i| (i * 7) % 11).collect();
    let positions = Tensor::from_i32(p, [3, t], Device::Cpu).unwrap();
    let (cos, sin) = ops::mrope_table(&positions, 12, 1e6, [2, 2, 2]).unwrap();
    let x = randn(7, &[t, 5, 12], 1.0);
    let r = randn(8, &[t, 5, 12], 1.0);
    let dx = ops::rope_backward(&r, &cos, &sin).unwrap();
    let rv = vec_of(&r);
    let l = |v: &[f32]| dot(&vec_of(&ops::rope(&like(&x, v), &cos, &sin).unwrap()), &rv);
    assert_grad("mrope", &vec_of(&x), &vec_of(&dx), &l);
}

#[test]
fn swiglu_and_gelu_backward() {
    let (g, u, r) = (randn(1, &[3, 11], 2.0), randn(2, &[3, 11], 1.0), randn(3, &[3, 11], 1.0));
    let (dg, du) = ops::swiglu_backward(&g, &u, &r).unwrap();
    let rv = vec_of(&r);
    let lg = |v: &[f32]| dot(&vec_of(&ops::swiglu(&like(&g, v), &u).unwrap()), &rv);
    let lu = |v: &[f32]| dot(&vec_of(&ops::swiglu(&g, &like(&u, v)).unwrap()), &rv);
    assert_grad("swiglu d_gate", &vec_of(&g), &vec_of(&dg), &lg);
    assert_grad("swiglu d_up", &vec_of(&u), &vec_of(&du), &lu);

    let x = randn(4, &[5, 7], 2.0);
    let r = randn(5, &[5, 7], 1.0);
    let dx = ops::gelu_backward(&x, &r).unwrap();
    let rv = vec_of(&r);
    let l = |v: &[f32]| dot(&vec_of(&ops::gelu(&like(&x, v)).unwrap()), &rv);
    assert_grad("gelu", &vec_of(&x), &vec_of(&dx), &l);
}

#[test]
fn embedding_and_image_scatter_backward() {
    // Embedding table [9, 4]; ids repeat; id 8 plays the image-pad token whose
    // positions are overwritten by image features and must get no gradient.
    let table = randn(1, &[9, 4], 1.0);
    let id_v = vec![3, 8, 8, 1, 3, 0, 8];
    let idt = ids(id_v.clone());
    let img_pos = ids(vec![1, 2, 6]);
    let feats = randn(2, &[3, 4], 1.0);
    let r = randn(3, &[7, 4], 1.0);
    let rv = vec_of(&r);
    let forward = |tab: &Tensor, f: &Tensor| {
        let e = ops::index_select(tab, &idt).unwrap();
        vec_of(&ops::scatter_rows(&e, &img_pos, f).unwrap())
    };
    let (dx, dfeats) = ops::scatter_rows_backward(&r, &img_pos).unwrap();
    let mut dtable = Tensor::zeros([9, 4], actial::DType::F32, Device::Cpu).unwrap();
    ops::index_select_backward(&mut dtable, &idt, &dx, Some(8)).unwrap();
    let lt = |v: &[f32]| dot(&forward(&like(&table, v), &feats), &rv);
    let lf = |v: &[f32]| dot(&forward(&table, &like(&feats, v)), &rv);
    assert_grad("embedding table", &vec_of(&table), &vec_of(&dtable), &lt);
    assert_grad("image features", &vec_of(&feats), &vec_of(&dfeats), &lf);
    assert!(vec_of(&dtable)[8 * 4..].iter().all(|&g| g == 0.0), "image-pad row got gradient");
}

#[test]
fn index_select_backward_is_scatter_add() {
    let x = randn(1, &[6, 3], 1.0);
    let idx = ids(vec![5, 0, 5, 2, 2, 2]);
    let r = randn(2, &[6, 3], 1.0);
    let mut dx = Tensor::zeros([6, 3], actial::DType::F32, Device::Cpu).unwrap();
    ops::index_select_backward(&mut dx, &idx, &r, None).unwrap();
    let rv = vec_of(&r);
    let l = |v: &[f32]| dot(&vec_of(&ops::index_select(&like(&x, v), &idx).unwrap()), &rv);
    assert_grad("index_select", &vec_of(&x), &vec_of(&dx), &l);
}

fn attention_grad_case(tag: &str, seed: u64, cu: Vec<i32>, hq: usize, hkv: usize, d: usize, causal: bool) {
    let t = *cu.last().unwrap() as usize;
    let (q, k, v) =
        (randn(seed, &[t, hq, d], 1.0), randn(seed + 1, &[t, hkv, d], 1.0), randn(seed + 2, &[t, hkv, d], 1.0));
    let r = randn(seed + 3, &[t, hq, d], 1.0);
    let cu = ids(cu);
    let spec = AttnSpec { scale: (d as f32).powf(-0.5), causal };
    let fwd = ops::attention(&q, &k, &v, &cu, spec).unwrap();
    let (dq, dk, dv) = ops::attention_backward(&q, &k, &v, &cu, spec, &fwd, &r).unwrap();
    let rv = vec_of(&r);
    let run = |q: &Tensor, k: &Tensor, v: &Tensor| dot(&vec_of(&ops::attention(q, k, v, &cu, spec).unwrap().out), &rv);
    assert_grad(&format!("{tag} dq"), &vec_of(&q), &vec_of(&dq), &|x| run(&like(&q, x), &k, &v));
    assert_grad(&format!("{tag} dk"), &vec_of(&k), &vec_of(&dk), &|x| run(&q, &like(&k, x), &v));
    assert_grad(&format!("{tag} dv"), &vec_of(&v), &vec_of(&dv), &|x| run(&q, &k, &like(&v, x)));
}

#[test]
fn attention_backward_ragged_gqa() {
    attention_grad_case("causal gqa", 10, vec![0, 5, 6, 13], 4, 2, 6, true);
    attention_grad_case("bidirectional", 20, vec![0, 7, 7, 11], 3, 1, 5, false);
    attention_grad_case("mha one segment", 30, vec![0, 9], 2, 2, 4, true);
}

#[test]
fn attention_backward_across_query_blocks() {
    // Segments longer than the 64-query block, so blocks and key ranges split.
    attention_grad_case("long causal", 40, vec![0, 70, 150], 2, 1, 4, true);
    attention_grad_case("long bidirectional", 50, vec![0, 3, 133], 2, 2, 3, false);
}

#[test]
fn cross_entropy_backward_ignores_masked_rows() {
    let logits = randn(1, &[6, 7], 2.0);
    let labels = ids(vec![3, -100, 0, 6, -100, 2]);
    let fwd = ops::cross_entropy(&logits, &labels).unwrap();
    assert_eq!(fwd.tokens, 4);
    let d = ops::cross_entropy_backward(&logits, &labels, &fwd, 1.0 / fwd.tokens as f32).unwrap();
    let l = |v: &[f32]| ops::cross_entropy(&like(&logits, v), &labels).unwrap().loss as f64;
    assert_grad("cross_entropy", &vec_of(&logits), &vec_of(&d), &l);
    assert!(vec_of(&d)[7..14].iter().all(|&g| g == 0.0));
}

#[test]
fn token_logprobs_backward_with_temperature() {
    for temp in [1.0f32, 0.7] {
        let logits = randn(2, &[5, 9], 1.5);
        let toks = ids(vec![0, 8, 4, 4, 1]);
        let r = randn(3, &[5], 1.0);
        let (_, lse) = ops::token_logprobs(&logits, &toks, temp).unwrap();
        let d = ops::token_logprobs_backward(&logits, &toks, &lse, &r, temp).unwrap();
        let rv = vec_of(&r);
        let l = |v: &[f32]| dot(&vec_of(&ops::token_logprobs(&like(&logits, v), &toks, temp).unwrap().0), &rv);
        assert_grad(&format!("token_logprobs T={temp}"), &vec_of(&logits), &vec_of(&d), &l);
    }
}

#[test]
fn lora_backward() {
    let (rows, din, dout, rank) = (7, 6, 5, 3);
    let x = randn(1, &[rows, din], 1.0);
    let w = randn(2, &[dout, din], 0.5);
    let b = randn(3, &[dout], 1.0);
    let a = randn(4, &[rank, din], 0.5);
    let bm = randn(5, &[dout, rank], 0.5); // nonzero B so dA is exercised
    let r = randn(6, &[rows, dout], 1.0);
    let s = 2.0;
    let fwd = ops::lora_linear(&x, &w, Some(&b), &a, &bm, s).unwrap();
    let mut da = Tensor::zeros(a.dims(), actial::DType::F32, Device::Cpu).unwrap();
    let mut db = Tensor::zeros(bm.dims(), actial::DType::F32, Device::Cpu).unwrap();
    let dx = ops::lora_linear_backward(&x, &w, &a, &bm, s, &fwd, &r, &mut da, &mut db).unwrap();
    let rv = vec_of(&r);
    let run = |x: &Tensor, a: &Tensor, bm: &Tensor| {
        dot(&vec_of(&ops::lora_linear(x, &w, Some(&b), a, bm, s).unwrap().y), &rv)
    };
    assert_grad("lora dx", &vec_of(&x), &vec_of(&dx), &|v| run(&like(&x, v), &a, &bm));
    assert_grad("lora dA", &vec_of(&a), &vec_of(&da), &|v| run(&x, &like(&a, v), &bm));
    assert_grad("lora dB", &vec_of(&bm), &vec_of(&db), &|v| run(&x, &a, &like(&bm, v)));
    // The forward equals the merged weight W + s·B·A.
    let delta = ops::matmul(&bm, &a, false, false).unwrap();
    let mut merged = w.clone();
    ops::add_scaled_assign(&mut merged, &delta, s).unwrap();
    let y_merged = vec_of(&ops::linear(&x, &merged, Some(&b)).unwrap());
    assert!(max_rel_err(&vec_of(&fwd.y), &y_merged, 1e-4) < 1e-4);
}

/// The fused linear + cross-entropy chunk by chunk equals the loss on whole
/// logits (one chunk): loss sum, dh and the accumulated dW, for one scale and
/// per-row scales, with ignored rows; its dh matches finite differences.
#[test]
fn linear_cross_entropy_in_chunks_equals_the_whole_logits() {
    let (t, d, v) = (23usize, 12usize, 37usize);
    let h = randn(81, &[t, d], 1.0);
    let w = randn(82, &[v, d], 0.5);
    let mut lab: Vec<i32> = (0..t).map(|i| ((i * 7) % v) as i32).collect();
    lab[4] = ops::IGNORE_INDEX;
    lab[17] = ops::IGNORE_INDEX;
    let labels = Tensor::from_i32(lab.clone(), [t], Device::Cpu).unwrap();
    let per_row: Vec<f32> = (0..t).map(|i| 0.01 * (1 + i % 4) as f32).collect();
    for scale in [ops::GradScale::Uniform(1.0 / 21.0), ops::GradScale::PerRow(&per_row)] {
        let run = |chunk: usize| {
            let mut dw = Tensor::zeros([v, d], actial::tensor::DType::F32, Device::Cpu).unwrap();
            let out = ops::linear_cross_entropy(&h, &w, &labels, scale, Some(&mut dw), chunk).unwrap();
            (out.loss_sum, out.tokens, out.dh.to_vec_f32().unwrap(), dw.to_vec_f32().unwrap())
        };
        let whole = run(t);
        for chunk in [1, 5, 22] {
            let c = run(chunk);
            assert!((c.0 - whole.0).abs() < 1e-4 * whole.0.abs(), "chunk {chunk}: loss {} vs {}", c.0, whole.0);
            assert_eq!((c.1, whole.1), (21, 21), "ignored rows are not counted");
            // Same rows, other GEMM blockings: equal to float rounding.
            assert!(max_rel_err(&c.2, &whole.2, 1e-5) < 1e-4, "chunk {chunk}: dh");
            assert!(max_rel_err(&c.3, &whole.3, 1e-5) < 1e-4, "chunk {chunk}: dW");
        }
        // dh against finite differences of the scaled loss Σ_r scale_r · loss_r.
        let hv = h.to_vec_f32().unwrap();
        let loss = |x: &[f32]| {
            let ht = Tensor::from_f32(x.to_vec(), [t, d], Device::Cpu).unwrap();
            let logits = ops::linear(&ht, &w, None).unwrap().to_vec_f32().unwrap();
            let mut total = 0.0f64;
            for (r, &l) in lab.iter().enumerate() {
                if l == ops::IGNORE_INDEX {
                    continue;
                }
                let row = &logits[r * v..(r + 1) * v];
                let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
                let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
                let s = match scale {
                    ops::GradScale::Uniform(s) => s,
                    ops::GradScale::PerRow(p) => p[r],
                } as f64;
                total += s * (lse - row[l as usize] as f64);
            }
            total
        };
        let dh = run(7).2;
        assert_grad("linear_cross_entropy dh", &hv, &dh, &loss);
    }
    let err = ops::linear_cross_entropy(&h, &w, &labels, ops::GradScale::Uniform(1.0), None, 0).err().unwrap();
    assert!(err.to_string().contains("chunk_rows must be at least 1"), "{err}");
}
