//! The recipes called in process (`actial::recipe`), on tiny configs: what each
//! writes into its run directory and what its typed report holds.

use std::path::{Path, PathBuf};

use actial::recipe::{ConfigSource, Recipe, RunOptions, load_config};
use actial::train::config::SftConfig;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("actial-recipe-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn config(recipe: Recipe, out: &Path, overrides: &[&str]) -> SftConfig {
    let src = ConfigSource {
        overrides: overrides.iter().map(|s| s.to_string()).collect(),
        out: Some(out.display().to_string()),
        ..Default::default()
    };
    load_config(recipe, &src).unwrap()
}

#[test]
fn full_recipe_runs_end_to_end_then_grpo_alone_from_its_sft_model() {
    let d = temp_dir("full");
    let out = d.join("run");
    let cfg = config(
        Recipe::Full,
        &out,
        &[
            "model.path=tiny-random",
            "run.steps=3",
            "run.global_batch=4",
            "run.micro_batch=2",
            "synth.pairs=8",
            "synth.heldout_pairs=2",
            "grpo.steps=2",
            "grpo.max_new_tokens=8",
            "grpo.prompts_per_step=2",
            "grpo.mini_batch_prompts=1",
            "grpo.group=2",
            "grpo.micro_batch=3",
        ],
    );
    // The embedded preset underneath: its curriculum and instructions stay.
    assert_eq!(cfg.data.curriculum.len(), 2);
    let report = actial::recipe::full::full(&cfg, &RunOptions::default()).unwrap();
    for f in [
        "report.md",
        "report.json",
        "plots/sft_loss.png",
        "plots/grpo_reward.png",
        "plots/grpo.png",
        "plots/grpo_accuracy_format.png",
        "plots/grpo_kl.png",
        "plots/grpo_response_length.png",
        "sft/checkpoint-000003/model.safetensors",
        "sft/metrics.jsonl",
        "grpo/checkpoint-000002/optimizer.safetensors",
        "grpo/metrics.jsonl",
        "eval/base_in_domain.jsonl",
        "eval/sft_in_domain_reasoning.jsonl",
        "eval/grpo_out_of_domain.jsonl",
        "final/model.safetensors",
        "final/actial_model.json",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    // The typed report is what the files hold.
    let names: Vec<&str> = report.rows.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["base", "SFT (hybrid cold-start)", "SFT + GRPO"]);
    assert_eq!(std::fs::read_to_string(out.join("report.md")).unwrap(), report.markdown());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["rows"], report.to_json()["rows"]);
    let sft = &report.rows[1].1;
    assert!((json["rows"][1]["in_domain"]["accuracy"].as_f64().unwrap() - sft.in_domain.accuracy()).abs() < 1e-12);
    // In domain is also asked with the CoT items' reasoning instruction: the same items.
    let asked = sft.in_domain_reasoning.as_ref().expect("the embedded preset sets data.cot_instruction");
    assert_eq!(asked.items.len(), sft.in_domain.items.len());
    let lines = std::fs::read_to_string(out.join("eval/sft_in_domain.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), sft.in_domain.items.len());
    // The bars to beat: the best constant letter is a share of the held-out
    // answers; rendered SAT-like questions have two options, viewpoint ones three.
    let (i, o) = (report.in_domain_baselines, report.out_of_domain_baselines);
    assert_eq!((i.items, o.items), (sft.in_domain.items.len(), sft.out_of_domain.items.len()));
    assert!((0.0..=100.0).contains(&o.best_constant) && o.best_constant >= o.uniform_guess - 1e-9);
    assert!((i.uniform_guess - 100.0 / 3.0).abs() < 1e-9 && (o.uniform_guess - 50.0).abs() < 1e-9, "{i:?} {o:?}");
    assert!(report.markdown().contains("| out-of-domain kind | items | SFT | SFT + GRPO | change |"));
    assert!(json["rows"][2]["out_of_domain"]["accuracy_ci95"][1].as_f64().unwrap() <= 1.0, "{json}");
    let metrics = std::fs::read_to_string(out.join("grpo/metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2);
    assert_eq!(report.grpo_last.as_ref().map(|m| m.step), Some(2));
    for key in
        ["reward_mean", "reward_std", "accuracy", "format_rate", "kl", "clip_frac", "entropy", "rollout_tokens_per_s"]
    {
        assert!(metrics.contains(key), "metrics lack {key}");
    }

    // Stage 2 alone from the stage-1 output, on a prompt file with one prompt too long.
    let prompts = d.join("prompts.jsonl");
    let long = "left ".repeat(3000);
    std::fs::write(
        &prompts,
        format!(
            "{{\"question\": \"Is it left?\", \"options\": [\"Left\", \"Right\"], \"answer\": \"A\"}}\n{{\"question\": \"{long}\", \"options\": [\"Left\", \"Right\"], \"answer\": \"B\"}}\n"
        ),
    )
    .unwrap();
    let g_out = d.join("grpo");
    let model = out.join("sft/checkpoint-000003");
    let cfg = config(
        Recipe::Grpo,
        &g_out,
        &[
            &format!("model.path={:?}", model.to_str().unwrap()),
            &format!("grpo.data=[{:?}]", prompts.to_str().unwrap()),
            "grpo.steps=1",
            "grpo.max_new_tokens=4",
            "grpo.prompts_per_step=1",
            "grpo.mini_batch_prompts=1",
            "grpo.group=2",
            "grpo.max_prompt_tokens=512",
        ],
    );
    // Not the tiny model: the paper's preset underneath.
    assert_eq!(cfg.grpo.clip_ratio_c, 3.0);
    let g = actial::recipe::grpo::grpo(&cfg, &RunOptions::default()).unwrap();
    assert_eq!(g.history.len(), 1);
    assert_eq!(g.history[0].step, 1);
    assert!(g.policy_dir.join("model.safetensors").is_file());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn sft_recipe_merges_lora_and_pretrain_writes_a_base_with_its_recipe() {
    let d = temp_dir("sft-pretrain");
    let out = d.join("sft");
    let cfg = config(
        Recipe::Sft,
        &out,
        &[
            "synth.pairs=2",
            "run.steps=2",
            "run.global_batch=2",
            "run.micro_batch=2",
            "lora.enabled=true",
            "lora.rank=2",
        ],
    );
    let opts = RunOptions { merge_lora: true, ..Default::default() };
    let report = actial::recipe::sft::sft(&cfg, &opts).unwrap();
    assert_eq!(report.history.iter().map(|m| m.step).collect::<Vec<_>>(), [1, 2]);
    assert!(report.tokens_per_s() > 0.0);
    let (n, merged) = report.merged.expect("merge_lora");
    assert!(n > 0);
    assert!(actial::model::Qwen25Vl::from_dir(&merged).is_ok());
    // Rendered data and the tiny base the adapters need sit in the run directory.
    for f in ["data/viewpoint.jsonl", "base/model.safetensors", "plots/sft_loss.png", "checkpoint-000002"] {
        assert!(out.join(f).exists(), "missing {f}");
    }

    let out = d.join("pretrain");
    let cfg = config(
        Recipe::Pretrain,
        &out,
        &[
            "pretrain.photos=3",
            "pretrain.text_items=10",
            "pretrain.eval_every=1",
            "run.steps=2",
            "run.global_batch=2",
            "run.micro_batch=2",
        ],
    );
    let report = actial::recipe::pretrain::pretrain(&cfg, &RunOptions::default()).unwrap();
    assert_eq!(report.steps, 2);
    assert_eq!(report.periodic.len(), 2, "pretrain.eval_every=1: a check after each step");
    assert_eq!(report.sets.len(), 4);
    assert!(report.markdown().contains("| viewpoint (two photos, not trained) |"));
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.model_dir.join("actial_pretrain.json")).unwrap()).unwrap();
    assert_eq!(
        (info["photos"].as_u64(), info["text_items"].as_u64(), info["steps"].as_u64()),
        (Some(3), Some(10), Some(2))
    );
    // Pretraining from random init refuses LoRA before any work.
    let cfg = config(Recipe::Pretrain, &d.join("p2"), &["lora.enabled=true"]);
    let e = actial::recipe::pretrain::pretrain(&cfg, &RunOptions::default()).unwrap_err().to_string();
    assert!(e.contains("lora.enabled=false"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_set_key_the_recipe_never_reads_is_an_error() {
    let src = |o: &[&str]| ConfigSource { overrides: o.iter().map(|s| s.to_string()).collect(), ..Default::default() };
    for (recipe, key) in [
        (Recipe::Sft, "grpo.steps=10"),
        (Recipe::Pretrain, "grpo.lr=1e-5"),
        (Recipe::Grpo, "data.cot_fraction=0.1"),
        (Recipe::Full, "pretrain.photos=10"),
    ] {
        let e = load_config(recipe, &src(&[key])).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains("never reads"), "{recipe:?} {key}: {e}");
    }
    // A key that moved names its new place, in a file or a --set.
    let e = load_config(Recipe::Sft, &src(&["data.synth_scene=\"cube\""])).unwrap_err().to_string();
    assert!(e.contains("data.synth_scene is now synth.scene"), "{e}");
    let e =
        actial::train::config::SftConfig::from_toml("[data]\nsynth_pairs = 3\n", &Default::default(), &[], "old.toml")
            .unwrap_err()
            .to_string();
    assert!(e.contains("old.toml") && e.contains("synth.pairs"), "{e}");
    // Rendered-data keys on a run from files.
    let files = ConfigSource { data: vec!["x.jsonl".into()], ..src(&["synth.pairs=4"]) };
    let e = load_config(Recipe::Sft, &files).unwrap_err().to_string();
    assert!(e.contains("renderer"), "{e}");
    // What each recipe reads is accepted; --data of GRPO alone is its prompts.
    assert!(load_config(Recipe::Full, &src(&["grpo.steps=3", "synth.pairs=4"])).is_ok());
    let g =
        load_config(Recipe::Grpo, &ConfigSource { data: vec!["p.jsonl".into()], ..src(&["grpo.steps=3"]) }).unwrap();
    assert_eq!((g.grpo.data.clone(), g.data.train.len()), (vec!["p.jsonl".to_string()], 0));
}

#[test]
fn grpo_inherits_the_shared_learning_rate_and_micro_batch_unless_it_sets_its_own() {
    let src = |o: &[&str]| ConfigSource { overrides: o.iter().map(|s| s.to_string()).collect(), ..Default::default() };
    // The paper sets stage 2's own; a run may set one back to the shared value.
    let paper = load_config(Recipe::Full, &ConfigSource { preset: Some("paper".into()), ..src(&[]) }).unwrap();
    assert_eq!((paper.grpo_lr(), paper.grpo_micro_batch(), paper.grpo_warmup_steps()), (1e-6, 8, 0));
    assert_eq!(paper.grpo_save_every(), paper.run.save_every);
    let c = load_config(Recipe::Full, &src(&["run.save_every=7", "grpo.lr=3e-5"])).unwrap();
    assert_eq!((c.grpo_save_every(), c.grpo_lr()), (7, 3e-5));
    assert!(c.grpo_lr_at(0) <= c.grpo_lr());
}

#[test]
fn held_out_sets_are_balanced_by_letter_and_intervals_are_wilson() {
    use actial::data::qa::QaRecord;
    let rec = |kind: &str, answer: &str| QaRecord {
        id: format!("{kind}-{answer}"),
        kind: kind.into(),
        system: None,
        prompt: "Q? A: x B: y".into(),
        images: vec![],
        response: answer.into(),
        answer: answer.into(),
        meta: serde_json::Value::Null,
    };
    // kind a: 5 A, 2 B; kind b: 3 A, 4 B, 1 C (a letter seen once caps the kind).
    let mut v = Vec::new();
    for (kind, answer, n) in [("a", "A", 5), ("a", "B", 2), ("b", "A", 3), ("b", "B", 4), ("b", "C", 1)] {
        v.extend((0..n).map(|_| rec(kind, answer)));
    }
    let count = |v: &[QaRecord], k: &str, a: &str| v.iter().filter(|r| r.kind == k && r.answer == a).count();
    let b = actial::recipe::full::balanced(v.clone(), 0);
    assert_eq!([count(&b, "a", "A"), count(&b, "a", "B")], [2, 2]);
    assert_eq!([count(&b, "b", "A"), count(&b, "b", "B"), count(&b, "b", "C")], [1, 1, 1]);
    // A cap per kind, split evenly over its letters.
    let b = actial::recipe::full::balanced(v, 2);
    assert_eq!([count(&b, "a", "A"), count(&b, "a", "B")], [1, 1]);
    // Wilson 95% by hand: 50 of 100 -> 0.5 -+ 0.0962; 0 of 10 -> [0, 0.2775].
    let (lo, hi) = actial::train::eval::wilson95(50, 100);
    assert!((lo - 0.40383).abs() < 1e-4 && (hi - 0.59617).abs() < 1e-4, "{lo} {hi}");
    let (lo, hi) = actial::train::eval::wilson95(0, 10);
    assert!(lo == 0.0 && (hi - 0.27754).abs() < 1e-4, "{hi}");
    assert_eq!(actial::train::eval::wilson95(0, 0), (0.0, 1.0));
}
