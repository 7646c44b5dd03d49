//! config.json in its three layouts, and the errors bad configs produce.

use actial::model::Qwen25VlConfig;

/// A released hub config (text fields at the top, rope_scaling), trimmed to the
/// fields that matter: Qwen2.5-VL-7B-Instruct's values.
const HUB_7B: &str = r#"{
  "architectures": ["Qwen2_5_VLForConditionalGeneration"],
  "model_type": "qwen2_5_vl",
  "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944,
  "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
  "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": false,
  "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
  "bos_token_id": 151643, "eos_token_id": 151645,
  "image_token_id": 151655, "video_token_id": 151656,
  "vision_start_token_id": 151652, "vision_end_token_id": 151653,
  "vision_config": {"depth": 32, "hidden_act": "silu", "hidden_size": 1280, "intermediate_size": 3420,
    "num_heads": 16, "in_chans": 3, "out_hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2,
    "spatial_patch_size": 14, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31],
    "tokens_per_second": 2, "temporal_patch_size": 2}
}"#;

/// transformers 4.5x: text fields under text_config, still rope_scaling.
const NESTED_3B: &str = r#"{
  "model_type": "qwen2_5_vl",
  "image_token_id": 151655, "video_token_id": 151656,
  "vision_start_token_id": 151652, "vision_end_token_id": 151653,
  "text_config": {"vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008,
    "num_hidden_layers": 36, "num_attention_heads": 16, "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": true,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}, "eos_token_id": 151645},
  "vision_config": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
    "in_chans": 3, "out_hidden_size": 2048, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31]}
}"#;

#[test]
fn hub_layout() {
    let c = Qwen25VlConfig::from_json_str(HUB_7B, "hub.json").unwrap();
    assert_eq!(c.text.hidden_size, 3584);
    assert_eq!(c.text.num_key_value_heads, 4);
    assert_eq!(c.text.head_dim(), 128);
    assert_eq!(c.text.mrope_section, [16, 24, 24]);
    assert_eq!(c.text.rope_theta, 1e6);
    assert!(!c.text.tie_word_embeddings);
    assert_eq!(c.vision.head_dim(), 80);
    assert_eq!(c.vision.patch_dim(), 1176);
    assert_eq!(c.vision.window_merged(), 4);
    assert_eq!(c.vision.fullatt_block_indexes, vec![7, 15, 23, 31]);
    assert_eq!(c.tokens.image_token_id, 151655);
    assert_eq!(c.tokens.eos_token_id, vec![151645]);
}

#[test]
fn text_config_layout() {
    let c = Qwen25VlConfig::from_json_str(NESTED_3B, "nested.json").unwrap();
    assert_eq!((c.text.hidden_size, c.text.num_hidden_layers), (2048, 36));
    assert!(c.text.tie_word_embeddings);
    assert_eq!(c.tokens.vision_start_token_id, 151652);
}

#[test]
fn transformers5_layout_from_the_fixture() {
    // Written by transformers 5 (rope_parameters, dtype): the parity fixture.
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity/tied_one_image/config.json");
    let c = Qwen25VlConfig::from_file(&path).unwrap();
    assert_eq!(c.text.mrope_section, [1, 1, 2]);
    assert_eq!(c.text.rope_theta, 10000.0);
    assert_eq!(c.vision.fullatt_block_indexes, vec![2]);
    assert_eq!(c.vision.patch_size, 6);
}

#[test]
fn written_config_reads_back() {
    let c = Qwen25VlConfig::from_json_str(HUB_7B, "hub.json").unwrap();
    let again = Qwen25VlConfig::from_json_str(&c.to_json().to_string(), "again.json").unwrap();
    assert_eq!(c, again);
}

#[test]
fn bad_configs_name_the_file_and_key() {
    let missing = HUB_7B.replace("\"num_key_value_heads\": 4,", "");
    let e = Qwen25VlConfig::from_json_str(&missing, "cfg.json").unwrap_err().to_string();
    assert!(e.contains("cfg.json") && e.contains("num_key_value_heads") && e.contains("missing"), "{e}");
    let yarn = HUB_7B.replace("\"type\": \"mrope\"", "\"type\": \"yarn\"");
    let e = Qwen25VlConfig::from_json_str(&yarn, "cfg.json").unwrap_err().to_string();
    assert!(e.contains("yarn"), "{e}");
    let other = HUB_7B.replace("\"model_type\": \"qwen2_5_vl\"", "\"model_type\": \"llama\"");
    assert!(Qwen25VlConfig::from_json_str(&other, "cfg.json").unwrap_err().to_string().contains("llama"));
    let gqa = HUB_7B.replace("\"num_key_value_heads\": 4", "\"num_key_value_heads\": 5");
    assert!(Qwen25VlConfig::from_json_str(&gqa, "cfg.json").unwrap_err().to_string().contains("kv heads"));
    let typed = HUB_7B.replace("\"hidden_size\": 3584", "\"hidden_size\": \"big\"");
    let e = Qwen25VlConfig::from_json_str(&typed, "cfg.json").unwrap_err().to_string();
    assert!(e.contains("hidden_size") && e.contains("integer"), "{e}");
    assert!(Qwen25VlConfig::from_json_str("{", "cfg.json").unwrap_err().to_string().contains("not valid JSON"));
}

/// Sizes of zero (which the shapes divide by) or far beyond any Qwen2.5-VL
/// (which an allocation would abort on) are refused naming the key.
#[test]
fn sizes_out_of_bounds_are_refused_naming_the_key() {
    for (from, to, key) in [
        ("\"patch_size\": 14", "\"patch_size\": 0", "patch_size is 0"),
        ("\"spatial_merge_size\": 2", "\"spatial_merge_size\": 0", "spatial_merge_size is 0"),
        ("\"num_hidden_layers\": 28", "\"num_hidden_layers\": 100000", "num_hidden_layers is 100000"),
        ("\"intermediate_size\": 18944", "\"intermediate_size\": 4294967295", "intermediate_size is 4294967295"),
    ] {
        let bad = HUB_7B.replace(from, to);
        assert_ne!(bad, HUB_7B, "{from}");
        let e = Qwen25VlConfig::from_json_str(&bad, "cfg.json").unwrap_err().to_string();
        assert!(e.contains("cfg.json") && e.contains(key) && e.contains("must be between 1 and"), "{e}");
    }
}
