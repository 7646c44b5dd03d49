//! AdamW against steps computed by hand, and global-norm clipping.

mod common;
use actial::ops::{self, AdamSlot, AdamW};
use actial::{DType, Device, Tensor};
use common::*;

fn scalar(x: f32) -> Tensor {
    Tensor::from_f32(vec![x], [1], Device::Cpu).unwrap()
}

#[test]
fn adamw_two_steps_by_hand() {
    // p = 1, lr 0.1, wd 0.01, betas (0.9, 0.999), eps 1e-8.
    // Step 1, g = 0.5: p ← 1·(1 − 0.001) = 0.999; m = 0.05, v = 0.00025;
    //   m̂ = 0.05/0.1 = 0.5, sqrt(v̂) = sqrt(0.00025/0.001) = 0.5 → p = 0.999 − 0.1·1 = 0.899.
    // Step 2, g = −0.25: m = 0.02, v = 0.00031225, bc1 = 0.19, bc2 = 0.001999
    //   → p = 0.899·0.999 − (0.1/0.19)·0.02/(sqrt(v)/sqrt(bc2) + eps) = 0.8714673.
    let h = AdamW { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 };
    let (mut p, mut m, mut v) = (scalar(1.0), scalar(0.0), scalar(0.0));
    for (step, g, want) in [(1u64, 0.5f32, 0.899f32), (2, -0.25, 0.871_467_3)] {
        let g = scalar(g);
        ops::adamw_step(&mut [AdamSlot { param: &mut p, grad: &g, m: &mut m, v: &mut v }], &h, step, 1.0).unwrap();
        let got = p.to_scalar_f32().unwrap();
        assert!((got - want).abs() < 2e-6, "step {step}: {got} vs {want}");
    }
    assert!((m.to_scalar_f32().unwrap() - 0.02).abs() < 1e-7);
    assert!((v.to_scalar_f32().unwrap() - 0.000_312_25).abs() < 1e-8);
}

#[test]
fn adamw_multi_tensor_matches_naive_loop() {
    let h = AdamW { lr: 3e-3, weight_decay: 0.1, ..AdamW::default() };
    let n = 40_000; // several rayon chunks
    let mut p = randn(1, &[n], 1.0);
    let mut m = Tensor::zeros([n], DType::F32, Device::Cpu).unwrap();
    let mut v = Tensor::zeros([n], DType::F32, Device::Cpu).unwrap();
    let mut p2 = randn(5, &[3, 7], 1.0);
    let mut m2 = Tensor::zeros([3, 7], DType::F32, Device::Cpu).unwrap();
    let mut v2 = Tensor::zeros([3, 7], DType::F32, Device::Cpu).unwrap();
    let (mut pn, mut mn, mut vn) = (vec_of(&p), vec![0.0; n], vec![0.0; n]);
    for step in 1..=3u64 {
        let g = randn(10 + step, &[n], 0.1);
        let g2 = randn(20 + step, &[3, 7], 0.1);
        let mut slots = [
            AdamSlot { param: &mut p, grad: &g, m: &mut m, v: &mut v },
            AdamSlot { param: &mut p2, grad: &g2, m: &mut m2, v: &mut v2 },
        ];
        ops::adamw_step(&mut slots, &h, step, 1.0).unwrap();
        actial::cpu::optim::adamw_step_naive(&mut pn, &vec_of(&g), &mut mn, &mut vn, &h, step);
    }
    let err = max_rel_err(&vec_of(&p), &pn, 1.0);
    assert!(err < 1e-6, "multi-tensor vs naive: {err}");
}

#[test]
fn clip_grad_norm_like_torch() {
    let mut a = Tensor::from_f32(vec![3.0, 4.0], [2], Device::Cpu).unwrap();
    let mut b = Tensor::from_f32(vec![12.0], [1], Device::Cpu).unwrap();
    let norm = ops::clip_grad_norm(&mut [&mut a, &mut b], 6.5).unwrap();
    assert!((norm - 13.0).abs() < 1e-9);
    let after = ops::grad_norm(&[&a, &b]).unwrap();
    assert!((after - 6.5).abs() < 1e-5, "{after}");
    assert!((vec_of(&a)[0] - 1.5).abs() < 1e-5);
    // Below the threshold nothing changes.
    let norm = ops::clip_grad_norm(&mut [&mut a, &mut b], 100.0).unwrap();
    assert!((norm - 6.5).abs() < 1e-5 && (vec_of(&a)[1] - 2.0).abs() < 1e-5);
}

#[test]
fn non_finite_gradients_are_an_error() {
    let mut a = Tensor::from_f32(vec![1.0, f32::NAN], [2], Device::Cpu).unwrap();
    let e = ops::clip_grad_norm(&mut [&mut a], 1.0).err().unwrap().to_string();
    assert!(e.contains("clip_grad_norm") && e.contains("NaN"), "{e}");
    assert_eq!(vec_of(&a)[0], 1.0, "gradients must be left untouched");
}

#[test]
fn adamw_rejects_mismatched_slots() {
    let h = AdamW::default();
    let (mut p, mut m, mut v) = (scalar(1.0), scalar(0.0), scalar(0.0));
    let g = Tensor::from_f32(vec![1.0, 2.0], [2], Device::Cpu).unwrap();
    let e =
        ops::adamw_step(&mut [AdamSlot { param: &mut p, grad: &g, m: &mut m, v: &mut v }], &h, 1, 1.0).err().unwrap();
    assert!(e.to_string().contains("adamw_step") && e.to_string().contains("[2]"), "{e}");
}

#[test]
fn adamw_grad_scale_equals_prescaled_gradients() {
    // The trainer folds the clip coefficient into the update instead of scaling
    // the gradients first; both must give the same bits, and the gradient stays.
    let h = AdamW { lr: 1e-2, weight_decay: 0.1, ..AdamW::default() };
    let n = 5000;
    let (mut pa, mut pb) = (randn(3, &[n], 1.0), randn(3, &[n], 1.0));
    let zeros = || Tensor::zeros([n], DType::F32, Device::Cpu).unwrap();
    let (mut ma, mut va, mut mb, mut vb) = (zeros(), zeros(), zeros(), zeros());
    for step in 1..=2u64 {
        let g = randn(40 + step, &[n], 0.3);
        let before = vec_of(&g);
        let scaled = Tensor::from_f32(before.iter().map(|x| x * 0.37).collect(), [n], Device::Cpu).unwrap();
        ops::adamw_step(&mut [AdamSlot { param: &mut pa, grad: &g, m: &mut ma, v: &mut va }], &h, step, 0.37).unwrap();
        ops::adamw_step(&mut [AdamSlot { param: &mut pb, grad: &scaled, m: &mut mb, v: &mut vb }], &h, step, 1.0)
            .unwrap();
        assert_eq!(vec_of(&g), before, "step {step}: the gradient was modified");
    }
    assert_eq!(vec_of(&pa), vec_of(&pb));
    assert_eq!(vec_of(&va), vec_of(&vb));
}

/// The step says whether every updated weight and moment stayed finite: an
/// overflowing update (a huge gradient squared into the second moment) is
/// reported, a normal one is not.
#[test]
fn adamw_reports_a_non_finite_update() {
    let h = AdamW::default();
    let step = |g: f32| {
        let (mut p, mut m, mut v) = (scalar(1.0), scalar(0.0), scalar(0.0));
        let g = scalar(g);
        ops::adamw_step(&mut [AdamSlot { param: &mut p, grad: &g, m: &mut m, v: &mut v }], &h, 1, 1.0).unwrap()
    };
    assert!(step(0.5));
    // 3e38² overflows f32: v = inf, the weight's update is 0/inf or NaN.
    assert!(!step(3e38));
    assert!(!step(f32::NAN));
}
