//! Verification ladder, rung 2: the CPU model against transformers.
//!
//! Fixtures come from tools/make_parity_fixtures.py (tiny random Qwen2.5-VL
//! checkpoints run through transformers in float32): logits, loss and the gradient
//! of every parameter. Cases cover untied and tied heads, GQA, two images with
//! non-square grids (merged sides that are and are not multiples of the window), a
//! text-only sample, a right-padded batch of 2, and both checkpoint naming styles.

use std::path::PathBuf;

use actial::model::weights::canonical_name;
use actial::model::{Batch, Checkpoint, Part, Qwen25Vl, Sample};
use actial::{Device, Tensor};

fn fixture_dir(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity").join(case)
}

/// max |a − b| / max |b|: an error relative to the tensor's scale.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-12);
    a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

struct Case {
    model: Qwen25Vl,
    batch: Batch,
    fx: Checkpoint,
    /// (batch, padded length, vocab)
    dims: (usize, usize, usize),
}

fn load(case: &str) -> Case {
    let dir = fixture_dir(case);
    let model = Qwen25Vl::from_dir(&dir).unwrap_or_else(|e| panic!("{case}: {e}"));
    let fx = Checkpoint::open(&dir.join("fixture.safetensors")).unwrap();
    let ids = fx.tensor("input_ids").unwrap();
    let (b, l) = (ids.dims()[0], ids.dims()[1]);
    let ids = ids.to_vec_i32().unwrap();
    let mask = fx.tensor("attention_mask").unwrap().to_vec_i32().unwrap();
    let labels = fx.tensor("labels").unwrap().to_vec_i32().unwrap();
    let samples: Vec<Sample> = (0..b)
        .map(|s| {
            let keep: Vec<usize> = (0..l).filter(|&i| mask[s * l + i] == 1).collect();
            Sample {
                tokens: keep.iter().map(|&i| ids[s * l + i] as u32).collect(),
                labels: Some(keep.iter().map(|&i| labels[s * l + i]).collect()),
            }
        })
        .collect();
    let (pixels, grids) = if fx.contains("pixel_values") {
        let g = fx.tensor("image_grid_thw").unwrap().to_vec_i32().unwrap();
        let grids: Vec<[usize; 3]> = g.chunks(3).map(|c| [c[0] as usize, c[1] as usize, c[2] as usize]).collect();
        (Some(fx.tensor("pixel_values").unwrap()), grids)
    } else {
        (None, vec![])
    };
    let batch = Batch::new(&samples, pixels, &grids, &model.config).unwrap();
    let v = model.config.text.vocab_size;
    Case { model, batch, fx, dims: (b, l, v) }
}

fn check_case(case: &str) {
    let mut c = load(case);
    for part in [Part::VisionTower, Part::Merger, Part::Language] {
        c.model.set_trainable(part, true).unwrap();
    }
    // Logits at every unpadded position.
    let (logits, _) = c.model.forward(&c.batch).unwrap();
    let ours = logits.to_vec_f32().unwrap();
    let theirs = c.fx.tensor("logits").unwrap().to_vec_f32().unwrap();
    let (_, l, v) = c.dims;
    let mut worst = 0.0f32;
    for (s, range) in c.batch.sample_ranges.iter().enumerate() {
        for (row, packed) in range.clone().enumerate() {
            let a = &ours[packed * v..(packed + 1) * v];
            let b = &theirs[(s * l + row) * v..(s * l + row + 1) * v];
            worst = worst.max(rel_err(a, b));
        }
    }
    assert!(worst < 1e-4, "{case}: logits differ from transformers by {worst:e} (relative)");

    // Loss and every parameter gradient.
    let out = c.model.forward_backward(&c.batch, None).unwrap();
    let ref_loss = c.fx.tensor("loss").unwrap().to_scalar_f32().unwrap();
    assert!(((out.loss - ref_loss) / ref_loss).abs() < 1e-4, "{case}: loss {} vs transformers {ref_loss}", out.loss);

    let fx_grads: Vec<String> = c.fx.names().filter(|n| n.starts_with("grad.")).map(String::from).collect();
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut worst_grad = 0.0f32;
    let patch_embed_shape: Vec<usize> = {
        let mut s = None;
        c.model.visit(&mut |n, p| {
            if n == "visual.patch_embed.proj.weight" {
                s = Some(p.value.dims().to_vec());
            }
        });
        s.unwrap()
    };
    let mut ours_by_name = std::collections::HashMap::new();
    c.model.visit(&mut |n, p| {
        ours_by_name.insert(n, p.grad.clone().expect("all parts trainable"));
    });
    for name in &fx_grads {
        let canon = canonical_name(&name["grad.".len()..]);
        let ours = ours_by_name.remove(&canon).unwrap_or_else(|| panic!("{case}: no parameter {canon} in the model"));
        let theirs = c.fx.tensor(name).unwrap();
        let theirs = if canon == "visual.patch_embed.proj.weight" {
            theirs.reshape(patch_embed_shape.clone()).unwrap()
        } else {
            theirs
        };
        assert_eq!(ours.dims(), theirs.dims(), "{case}: {canon} grad shape");
        let e = rel_err(&ours.to_vec_f32().unwrap(), &theirs.to_vec_f32().unwrap());
        worst_grad = worst_grad.max(e);
        if e >= 1e-3 {
            failures.push(format!("{canon}: {e:e}"));
        }
        checked += 1;
    }
    // Parameters transformers gave no gradient (the unused vision tower of a text-only
    // batch) must have none here either.
    for (name, g) in ours_by_name {
        assert!(
            g.to_vec_f32().unwrap().iter().all(|&x| x == 0.0),
            "{case}: {name} has a gradient transformers does not"
        );
    }
    assert!(failures.is_empty(), "{case}: {} of {checked} gradients differ:\n{}", failures.len(), failures.join("\n"));
    assert!(checked > 20, "{case}: only {checked} gradients compared");
    eprintln!(
        "{case}: logits rel err {worst:.1e}, loss {} vs {ref_loss}, {checked} grads, worst rel err {worst_grad:.1e}",
        out.loss
    );
}

#[test]
fn untied_gqa_two_images_padded_batch() {
    check_case("untied_gqa_two_images");
}

#[test]
fn tied_one_image() {
    check_case("tied_one_image");
}

#[test]
fn text_only() {
    check_case("text_only");
}

#[test]
fn frozen_parts_get_no_gradients_and_do_not_change_the_rest() {
    // Training only the LM must give the LM the same gradients as training everything.
    let mut all = load("untied_gqa_two_images");
    let mut lm = load("untied_gqa_two_images");
    for p in [Part::VisionTower, Part::Merger, Part::Language] {
        all.model.set_trainable(p, true).unwrap();
    }
    lm.model.set_trainable(Part::Language, true).unwrap();
    let a = all.model.forward_backward(&all.batch, None).unwrap();
    let b = lm.model.forward_backward(&lm.batch, None).unwrap();
    assert_eq!(a.loss, b.loss);
    let mut grads = std::collections::HashMap::new();
    all.model.visit(&mut |n, p| {
        grads.insert(n, p.grad.clone());
    });
    let mut n_lm = 0;
    lm.model.visit(&mut |n, p| {
        if n.starts_with("visual.") {
            assert!(p.grad.is_none(), "{n} is frozen but has a grad");
        } else {
            let mine = p.grad.as_ref().unwrap().to_vec_f32().unwrap();
            let full = grads[&n].as_ref().unwrap().to_vec_f32().unwrap();
            assert_eq!(mine, full, "{n}");
            n_lm += 1;
        }
    });
    assert!(n_lm > 10);
}

#[test]
fn checkpoint_errors_name_every_bad_tensor() {
    let dir = fixture_dir("text_only");
    let cfg = actial::model::Qwen25VlConfig::from_file(&dir.join("config.json")).unwrap();
    // Rewrite the checkpoint without one tensor, with one mis-shaped, plus a stranger.
    let ckpt = Checkpoint::open(&dir).unwrap();
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for n in ckpt.names() {
        let t = ckpt.tensor(n).unwrap();
        match n {
            "model.norm.weight" => continue,
            "model.layers.0.mlp.up_proj.weight" => {
                tensors.push((n.to_string(), Tensor::zeros([3, 3], actial::DType::F32, Device::Cpu).unwrap()))
            }
            _ => tensors.push((n.to_string(), t)),
        }
    }
    tensors.push(("model.extra.weight".into(), Tensor::zeros([2], actial::DType::F32, Device::Cpu).unwrap()));
    let tmp = std::env::temp_dir().join(format!("actial-bad-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let refs: Vec<(String, &Tensor)> = tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
    actial::model::weights::save_safetensors(&tmp.join("model.safetensors"), &refs, actial::DType::F32, None).unwrap();
    let e = Qwen25Vl::from_checkpoint(cfg, &Checkpoint::open(&tmp).unwrap(), "bad").err().unwrap().to_string();
    assert!(e.contains("3 tensor problem(s)"), "{e}");
    assert!(e.contains("missing model.norm.weight"), "{e}");
    assert!(e.contains("model.layers.0.mlp.up_proj.weight has shape [3, 3]"), "{e}");
    assert!(e.contains("unexpected model.extra.weight"), "{e}");
    // A truncated file is a clear error naming it.
    let bytes = std::fs::read(tmp.join("model.safetensors")).unwrap();
    std::fs::write(tmp.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let e = Checkpoint::open(&tmp).err().unwrap().to_string();
    assert!(e.contains("model.safetensors") && e.contains("corrupt or truncated"), "{e}");
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn save_then_load_round_trips() {
    let mut c = load("tied_one_image");
    let tmp = std::env::temp_dir().join(format!("actial-roundtrip-{}", std::process::id()));
    c.model.save(&tmp, actial::DType::F32).unwrap();
    let reloaded = Qwen25Vl::from_dir(&tmp).unwrap();
    let (a, _) = c.model.forward(&c.batch).unwrap();
    let (b, _) = reloaded.forward(&c.batch).unwrap();
    assert_eq!(a.to_vec_f32().unwrap(), b.to_vec_f32().unwrap());
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn batches_reject_image_token_mismatches() {
    let c = load("tied_one_image");
    let cfg = &c.model.config;
    let img = cfg.tokens.image_token_id;
    let grids = [[1usize, 10, 14]]; // 35 merged tokens
    let px = c.fx.tensor("pixel_values").unwrap();
    let mut tokens = vec![5u32, 6];
    tokens.extend(std::iter::repeat_n(img, 34));
    let s = Sample { tokens, labels: None };
    let e = Batch::new(std::slice::from_ref(&s), Some(px.clone()), &grids, cfg).err().unwrap().to_string();
    assert!(e.contains("34 image tokens") && e.contains("35"), "{e}");
    let text = Sample { tokens: vec![1, 2, 3], labels: None };
    let e = Batch::new(&[text], Some(px.clone()), &grids, cfg).err().unwrap().to_string();
    assert!(e.contains("1 image grids given") && e.contains("0 images"), "{e}");
    let e = Batch::new(&[Sample { tokens: vec![1, 9999], labels: None }], None, &[], cfg).err().unwrap().to_string();
    assert!(e.contains("token id 9999"), "{e}");
    let bad_px = px.narrow(0, 0, 10).unwrap();
    let mut ok_tokens = vec![5u32];
    ok_tokens.extend(std::iter::repeat_n(img, 35));
    let e =
        Batch::new(&[Sample { tokens: ok_tokens, labels: None }], Some(bad_px), &grids, cfg).err().unwrap().to_string();
    assert!(e.contains("pixel_values"), "{e}");
}
