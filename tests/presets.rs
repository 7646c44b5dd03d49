//! The committed presets (assets/presets): each one parses, validates and is
//! built into the binary; `paper` is the built-in defaults.

use actial::train::config::{PRESETS, SftConfig};

#[test]
fn every_committed_preset_is_listed_and_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/presets");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".toml").map(String::from))
        .collect();
    files.sort();
    let mut listed: Vec<String> = PRESETS.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(files, listed, "a preset file that is not built in, or the other way round");
    for (name, text) in PRESETS {
        let c = SftConfig::preset(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        c.validate().unwrap();
        // The built-in copy is the committed file.
        assert_eq!(std::fs::read_to_string(dir.join(format!("{name}.toml"))).unwrap(), text);
    }
    assert_eq!(SftConfig::preset("paper").unwrap(), SftConfig::default(), "paper.toml holds the built-in defaults");
    assert_eq!(SftConfig::preset("qwen2.5-vl-7b").unwrap().optim, SftConfig::default().optim);
    let e = SftConfig::preset("huge").unwrap_err().to_string();
    assert!(e.contains("no preset \"huge\"") && e.contains("embedded"), "{e}");
}

#[test]
fn presets_chain_through_their_base() {
    let (tiny, embedded) = (SftConfig::tiny_defaults(), SftConfig::embedded_defaults());
    // embedded = tiny + its own keys: what it does not set is tiny's.
    assert_eq!((embedded.lora.clone(), embedded.run.global_batch), (tiny.lora.clone(), tiny.run.global_batch));
    assert_ne!(embedded.data, tiny.data);
    assert_eq!(embedded.data.curriculum.len(), 2);
    // The tiny preset keeps the release's dual-clip and k3 clamp off; the paper has them.
    assert_eq!((tiny.grpo.clip_ratio_c, tiny.grpo.kl_clamp), (0.0, 0.0));
    let paper = SftConfig::default();
    assert_eq!((paper.grpo.clip_ratio_c, paper.grpo.kl_clamp), (3.0, 10.0));
}
