//! Checkpoint formats: sharded files with an index, bf16 / f16 tensors, both
//! naming styles (the parity fixtures cover hub and transformers >= 4.52 names).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use actial::model::{Batch, Checkpoint, Qwen25Vl, Sample};
use actial::{DType, Tensor};
use half::f16;
use safetensors::tensor::{Dtype, TensorView};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity/text_only")
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("actial-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn logits(model: &Qwen25Vl) -> Vec<f32> {
    let s = Sample { tokens: (0..20).map(|i| (i * 7 % 280) as u32).collect(), labels: None };
    let b = Batch::new(&[s], None, &[], &model.config).unwrap();
    model.forward(&b).unwrap().0.to_vec_f32().unwrap()
}

#[test]
fn sharded_checkpoint_with_index_loads_identically() {
    let src = fixture();
    let ckpt = Checkpoint::open(&src).unwrap();
    let names: Vec<String> = ckpt.names().map(String::from).collect();
    let dir = tmpdir("sharded");
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let mut weight_map = serde_json::Map::new();
    for (shard, chunk) in names.chunks(names.len().div_ceil(3)).enumerate() {
        let file = format!("model-{:05}-of-00003.safetensors", shard + 1);
        let tensors: Vec<(String, Tensor)> = chunk.iter().map(|n| (n.clone(), ckpt.tensor(n).unwrap())).collect();
        let refs: Vec<(String, &Tensor)> = tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
        actial::model::weights::save_safetensors(&dir.join(&file), &refs, DType::F32, None).unwrap();
        for n in chunk {
            weight_map.insert(n.clone(), serde_json::Value::String(file.clone()));
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let a = Qwen25Vl::from_dir(&src).unwrap();
    let b = Qwen25Vl::from_dir(&dir).unwrap();
    assert_eq!(logits(&a), logits(&b));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bf16_and_f16_weights_load_and_run() {
    let src = fixture();
    let mut model = Qwen25Vl::from_dir(&src).unwrap();
    let reference = logits(&model);

    // bf16 through our own writer.
    let dir = tmpdir("bf16");
    model.save(&dir, DType::BF16).unwrap();
    let bf = Qwen25Vl::from_dir(&dir).unwrap();
    assert_eq!(bf.text.embed.value.dtype(), DType::BF16);
    let got = logits(&bf);
    let err = got.iter().zip(&reference).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(err < 0.1 && err > 0.0, "bf16 logits differ by {err}");

    // f16 written with the safetensors crate directly.
    let ckpt = Checkpoint::open(&src).unwrap();
    let mut bufs: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for n in ckpt.names() {
        let t = ckpt.tensor(n).unwrap();
        let h: Vec<f16> = t.to_vec_f32().unwrap().iter().map(|&x| f16::from_f32(x)).collect();
        bufs.push((n.to_string(), t.dims().to_vec(), bytemuck::cast_slice(&h).to_vec()));
    }
    let views: HashMap<String, TensorView> =
        bufs.iter().map(|(n, s, b)| (n.clone(), TensorView::new(Dtype::F16, s.clone(), b).unwrap())).collect();
    let dir16 = tmpdir("f16");
    std::fs::copy(src.join("config.json"), dir16.join("config.json")).unwrap();
    safetensors::serialize_to_file(views, None, &dir16.join("model.safetensors")).unwrap();
    let h = Qwen25Vl::from_dir(&dir16).unwrap();
    let got = logits(&h);
    let err = got.iter().zip(&reference).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(err < 0.02, "f16 logits differ by {err}");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&dir16).unwrap();
}

#[test]
fn missing_checkpoint_is_a_clear_error() {
    let dir = tmpdir("empty");
    std::fs::copy(fixture().join("config.json"), dir.join("config.json")).unwrap();
    let e = Qwen25Vl::from_dir(&dir).err().unwrap().to_string();
    assert!(e.contains("no model.safetensors"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A config.json that asks for far more than its weights file holds (1000
/// layers of a 65,536-wide MLP over a 2-layer fixture: ~1 TB of f32) is an
/// error listing the first problems, and allocates nothing for the missing
/// tensors on the way (the stand-ins are empty).
#[test]
fn a_config_far_bigger_than_its_weights_lists_the_problems_without_allocating() {
    let dir = tmpdir("config-too-big");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture().join(f), dir.join(f)).unwrap();
    }
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let text = if cfg.get("text_config").is_some() { &mut cfg["text_config"] } else { &mut cfg };
    text["num_hidden_layers"] = 1000.into();
    text["intermediate_size"] = 65536.into();
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let e = Qwen25Vl::from_dir(&dir).err().unwrap().to_string();
    assert!(e.contains("tensor problem(s)") && e.contains("expected [65536, 32]") && e.contains("more"), "{e}");
    assert!(e.lines().count() < 40, "the list is cut short: {} lines", e.lines().count());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A safetensors file the reader refuses names the tensor at fault (the
/// crate's own messages, e.g. "invalid shape, data type, or offset for
/// tensor", do not).
#[test]
fn a_corrupt_safetensors_header_names_the_tensor() {
    let dir = tmpdir("bad-header");
    let write = |header: &str, data: usize| {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        bytes.extend(vec![0u8; data]);
        std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
        Checkpoint::open(&dir).err().unwrap().to_string()
    };
    let a = r#""model.a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#;
    let e = write(&format!(r#"{{{a},"model.b":{{"dtype":"F32","shape":[3],"data_offsets":[8,16]}}}}"#), 16);
    assert!(e.contains("model.b") && e.contains("needs 12 bytes"), "{e}");
    let e = write(&format!(r#"{{{a},"model.b":{{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}}}"#), 12);
    assert!(e.contains("model.b") && e.contains("run past the data"), "{e}");
    let e = write(&format!(r#"{{{a},"model.b":{{"dtype":"Q4","shape":[2],"data_offsets":[8,16]}}}}"#), 16);
    assert!(e.contains("model.b") && e.contains("unknown dtype"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
