//! The committed presets (assets/presets): each one parses, validates and is
//! built into the binary; `paper` is the built-in defaults and lists every key.

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
    assert_eq!(SftConfig::preset("paper").unwrap(), SftConfig::default(), "paper.toml is the built-in defaults");
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

/// Every key of every section, set or commented out, in paper.toml: the one
/// place a user reads what a key does.
#[test]
fn the_paper_preset_lists_every_key() {
    let text = SftConfig::preset_text("paper").unwrap();
    let (mut listed, mut section) = (std::collections::BTreeSet::new(), String::new());
    for line in text.lines() {
        let l = line.trim_start_matches('#').trim();
        if let Some(s) = l.strip_prefix('[').and_then(|l| l.split(']').next()) {
            section = s.trim_matches('[').to_string();
        } else if let Some((key, _)) = l.split_once(" = ")
            && key.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            listed.insert(format!("{section}.{key}"));
        }
    }
    // Every key the config has: unset options set to a value so they serialise.
    let mut c = SftConfig::default();
    c.data.cot_fraction = Some(0.1);
    c.data.cot_instruction = Some(String::new());
    c.data.system = Some(String::new());
    c.synth.option_order = Some(Default::default());
    c.grpo.instruction = Some(String::new());
    c.grpo.save_every = Some(0);
    c.pretrain.init = Some(String::new());
    let table = toml::Table::try_from(&c).unwrap();
    for (section, keys) in &table {
        for key in keys.as_table().unwrap().keys() {
            assert!(listed.contains(&format!("{section}.{key}")), "paper.toml does not list {section}.{key}");
        }
    }
}
