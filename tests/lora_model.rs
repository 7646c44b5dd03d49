//! LoRA in the model: PEFT target matching, frozen bases, and adapter gradients
//! through the whole model (vision and language) against finite differences.

use std::path::Path;

use actial::model::{Batch, Checkpoint, LoraSpec, Qwen25Vl, Sample};
use actial::ops;
use actial::rng::Philox;

fn setup() -> (Qwen25Vl, Batch) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity/tied_one_image");
    let model = Qwen25Vl::from_dir(&dir).unwrap();
    let fx = Checkpoint::open(&dir.join("fixture.safetensors")).unwrap();
    let ids: Vec<u32> = fx.tensor("input_ids").unwrap().to_vec_i32().unwrap().iter().map(|&x| x as u32).collect();
    let labels = fx.tensor("labels").unwrap().to_vec_i32().unwrap();
    let g = fx.tensor("image_grid_thw").unwrap().to_vec_i32().unwrap();
    let grids = [[g[0] as usize, g[1] as usize, g[2] as usize]];
    let batch = Batch::new(
        &[Sample { tokens: ids, labels: Some(labels) }],
        Some(fx.tensor("pixel_values").unwrap()),
        &grids,
        &model.config,
    )
    .unwrap();
    (model, batch)
}

fn loss(model: &Qwen25Vl, batch: &Batch) -> f64 {
    let (logits, _) = model.forward(batch).unwrap();
    ops::cross_entropy(&logits, batch.targets.as_ref().unwrap()).unwrap().loss as f64
}

#[test]
fn targets_match_like_peft_and_bases_freeze() {
    let (mut model, _) = setup();
    let spec = LoraSpec {
        rank: 4,
        alpha: 8.0,
        targets: vec!["q_proj".into(), "qkv".into(), "down_proj".into()],
        language: true,
        vision: true,
        seed: 1,
    };
    let adapted = model.add_lora(&spec).unwrap();
    // 2 decoder layers x (q_proj, down_proj) + 3 vision blocks x (qkv, down_proj).
    assert_eq!(adapted.len(), 2 * 2 + 3 * 2, "{adapted:?}");
    assert!(adapted.contains(&"model.layers.1.self_attn.q_proj".to_string()));
    assert!(adapted.contains(&"visual.blocks.2.attn.qkv".to_string()));
    let mut trainable = Vec::new();
    model.visit(&mut |n, p| {
        if p.trainable() {
            trainable.push(n);
        }
    });
    assert_eq!(trainable.len(), 2 * adapted.len());
    assert!(trainable.iter().all(|n| n.contains(".lora_")));
    let only_lm = LoraSpec { vision: false, ..spec.clone() };
    let (mut m2, _) = setup();
    assert_eq!(m2.add_lora(&only_lm).unwrap().len(), 4);
    let none = LoraSpec { targets: vec!["nothing".into()], ..spec };
    assert!(setup().0.add_lora(&none).unwrap_err().to_string().contains("nothing"));
}

#[test]
fn adapter_gradients_match_finite_differences() {
    let (mut model, batch) = setup();
    let spec = LoraSpec {
        rank: 2,
        alpha: 4.0,
        targets: vec!["v_proj".into(), "qkv".into(), "up_proj".into()],
        language: true,
        vision: true,
        seed: 3,
    };
    model.add_lora(&spec).unwrap();
    // B starts at zero (the adapter is a no-op); give it values so dA is not zero.
    let mut rng = Philox::new(9, 0);
    model.visit(&mut |n, p| {
        if n.ends_with("lora_B.weight") {
            let v = rng.normal_vec(p.value.numel(), 0.3);
            p.value = actial::Tensor::from_f32(v, p.value.dims(), actial::Device::Cpu).unwrap();
        }
    });
    model.zero_grad().unwrap();
    model.forward_backward(&batch, None).unwrap();
    let checks = [
        "model.layers.0.self_attn.v_proj.lora_A.weight",
        "model.layers.1.self_attn.v_proj.lora_B.weight",
        "visual.blocks.0.attn.qkv.lora_A.weight",
        "visual.blocks.2.mlp.up_proj.lora_B.weight",
        "model.layers.1.mlp.up_proj.lora_A.weight",
    ];
    for name in checks {
        let mut value = None;
        let mut grad = None;
        model.visit(&mut |n, p| {
            if n == name {
                value = Some(p.value.to_vec_f32().unwrap());
                grad = Some(p.grad.as_ref().unwrap().to_vec_f32().unwrap());
            }
        });
        let (value, grad) = (value.unwrap(), grad.unwrap());
        // The three largest-gradient coordinates plus two fixed ones.
        let mut order: Vec<usize> = (0..grad.len()).collect();
        order.sort_by(|&a, &b| grad[b].abs().total_cmp(&grad[a].abs()));
        for &i in order.iter().take(3).chain([0usize, grad.len() / 2].iter()) {
            let h = 1e-2f32;
            let mut at = |delta: f32| {
                let mut v = value.clone();
                v[i] += delta;
                model.visit(&mut |n, p| {
                    if n == name {
                        p.value = actial::Tensor::from_f32(v.clone(), p.value.dims(), actial::Device::Cpu).unwrap();
                    }
                });
                loss(&model, &batch)
            };
            let numeric = ((at(h) - at(-h)) / (2.0 * h as f64)) as f32;
            at(0.0);
            let a = grad[i];
            assert!(
                (a - numeric).abs() <= 2e-4 + 2e-2 * a.abs().max(numeric.abs()),
                "{name}[{i}]: analytic {a}, numeric {numeric}"
            );
        }
    }
}
