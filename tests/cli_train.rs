//! The actial-train binary: arguments, printing, run directories, resume,
//! device checks (the recipes themselves are tested in process in tests/recipe.rs).

use std::process::Command;

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_actial-train")).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "actial-train {args:?} failed:\n{text}");
    text
}

/// A fresh `d` with six rendered viewpoint pairs in `d/data`.
fn synth_data(d: &std::path::Path) {
    let _ = std::fs::remove_dir_all(d);
    let st = Command::new(env!("CARGO_BIN_EXE_actial-data"))
        .args([
            "synth",
            "--out",
            d.join("data").to_str().unwrap(),
            "--pairs",
            "6",
            "--size",
            "56",
            "--supersample",
            "1",
        ])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn sft_runs_resumes_and_merges() {
    let d = std::env::temp_dir().join(format!("actial-cli-train-{}", std::process::id()));
    let (data, out) = (d.join("data"), d.join("run"));
    synth_data(&d);
    let (o, f) = (out.to_str().unwrap(), format!("{}/viewpoint.jsonl", data.display()));
    let common =
        ["--recipe", "sft", "--data", &f, "--out", o, "--set", "run.global_batch=4", "--set", "run.micro_batch=2"];
    let text =
        run(&[&common[..], &["--set", "run.steps=2", "--set", "lora.enabled=true", "--set", "lora.rank=4"]].concat());
    assert!(text.contains("LoRA") && text.contains("done: loss"), "{text}");
    for f in [
        "metrics.jsonl",
        "plots/sft_loss.png",
        "plots/sft_lr.png",
        "plots/sft_grad_norm.png",
        "checkpoint-000002/adapter_model.safetensors",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    // Resume to 4 steps: the log continues, one line per step.
    let text = run(&[
        &common[..],
        &["--set", "run.steps=4", "--set", "lora.enabled=true", "--set", "lora.rank=4", "--resume", o, "--merge-lora"],
    ]
    .concat());
    assert!(text.contains("resumed from") && text.contains("at step 2") && text.contains("merged"), "{text}");
    let steps: Vec<u64> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4]);
    // TensorBoard: one event file per start; the resumed one marks step 2, so
    // TensorBoard drops whatever the first logged past it.
    let mut tb: Vec<_> = std::fs::read_dir(out.join("tb")).unwrap().flatten().map(|e| e.path()).collect();
    tb.sort();
    assert_eq!(tb.len(), 2, "{tb:?}");
    let scalars: usize = tb
        .iter()
        .map(|f| actial::train::tensorboard::read_records(f).unwrap())
        .map(|r| r.iter().filter(|e| e.windows(8).any(|w| w == b"sft/loss")).count())
        .sum();
    assert_eq!(scalars, 4, "one sft/loss summary per step");
    assert!(actial::model::Qwen25Vl::from_dir(&out.join("merged")).is_ok());
    // Unknown keys are errors.
    let bad = Command::new(env!("CARGO_BIN_EXE_actial-train"))
        .args(["--recipe", "sft", "--set", "optim.learning_rate=1"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("learning_rate"));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn full_recipe_prints_its_table_and_pretrain_flags_reach_the_config() {
    let d = std::env::temp_dir().join(format!("actial-cli-full-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let out = d.join("run");
    let o = out.to_str().unwrap();
    let tiny = "model.path=tiny-random";
    let small = [
        "--set",
        tiny,
        "--set",
        "run.steps=1",
        "--set",
        "run.global_batch=2",
        "--set",
        "run.micro_batch=2",
        "--set",
        "synth.pairs=2",
        "--set",
        "data.curriculum=[]",
        "--set",
        "synth.heldout_pairs=1",
        "--set",
        "grpo.steps=1",
        "--set",
        "grpo.max_new_tokens=2",
        "--set",
        "grpo.prompts_per_step=1",
        "--set",
        "grpo.mini_batch_prompts=1",
        "--set",
        "grpo.group=2",
    ];
    let text = run(&[&["--recipe", "full", "--out", o][..], &small[..]].concat());
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| SFT + GRPO |") && text.contains(&md), "the printed table is report.md:\n{text}");
    // The pretraining flags are `--set pretrain.*` shortcuts; a --set after them wins.
    let printed = run(&[
        "--recipe",
        "pretrain",
        "--photos",
        "2",
        "--text-items",
        "9",
        "--init",
        "some/dir",
        "--set",
        "pretrain.text_items=7",
        "--print-config",
    ]);
    let cfg = actial::train::config::SftConfig::from_toml(&printed, &Default::default(), &[], "printed").unwrap();
    assert_eq!((cfg.pretrain.photos, cfg.pretrain.text_items), (2, 7), "{printed}");
    assert_eq!(cfg.pretrain.init.as_deref(), Some("some/dir"));
    // The pretrain preset underneath.
    assert_eq!(
        cfg,
        actial::recipe::load_config(
            actial::recipe::Recipe::Pretrain,
            &actial::recipe::ConfigSource {
                overrides: vec![
                    "pretrain.photos=2".into(),
                    "pretrain.text_items=7".into(),
                    "pretrain.init=\"some/dir\"".into()
                ],
                ..Default::default()
            }
        )
        .unwrap()
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn device_flag_reaches_the_run_and_an_unusable_gpu_is_a_clear_error() {
    if actial::cuda::available().is_ok() {
        println!("a CUDA device is present: tests/cuda_model.rs covers training on it");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_actial-train"))
        .args(["--recipe", "sft", "--device", "cuda"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "training on a machine without a usable GPU must fail");
    assert!(text.contains("cuda:0") && text.contains("--device cpu"), "{text}");
}

/// `--plan` needs only a config.json (the released 7B's dims, no weights, no
/// data): it says the paper's GRPO does not fit one H200 with full
/// fine-tuning and why, and that the tiny preset fits; it trains nothing.
#[test]
fn plan_from_a_config_alone() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/configs/qwen2.5-vl-7b-instruct");
    let text = run(&["--recipe", "grpo", "--plan", "--set", &format!("model.path={dir:?}")]);
    assert!(text.contains("language 7.62B parameters"), "{text}");
    assert!(text.contains("GRPO rollout") && text.contains("H200 141GB  DOES NOT FIT"), "{text}");
    let lora =
        run(&["--recipe", "sft", "--plan", "--set", &format!("model.path={dir:?}"), "--set", "lora.enabled=true"]);
    assert!(lora.contains("LoRA trainable") && !lora.contains("GRPO rollout"), "{lora}");
    let tiny = run(&["--recipe", "sft", "--plan"]);
    assert!(tiny.contains("H200 141GB  fits") && !tiny.contains("DOES NOT FIT"), "{tiny}");
}

/// A CUDA run that cannot fit the device prints its plan and stops before any
/// work (data, weights), naming the phase, what it needs and what is free; on
/// the emulated driver with 32 MiB of device memory. `--skip-fit-check` starts
/// it anyway, and then it is the allocator that refuses, naming the phase.
#[test]
fn a_cuda_run_that_cannot_fit_prints_its_plan_and_stops() {
    if !actial::cuda::build_info::KERNELS_BUILT {
        println!("SKIPPED: built without the CUDA kernels");
        return;
    }
    let d = std::env::temp_dir().join(format!("actial-cli-nofit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let train = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_actial-train"))
            .args([&["--recipe", "sft", "--device", "cuda", "--out", d.to_str().unwrap()], extra].concat())
            .env("ACTIAL_EMULATED_DRIVER", "1")
            .env("ACTIAL_EMULATED_DEVICE_MEMORY", (32u64 << 20).to_string())
            .output()
            .unwrap()
    };
    let out = train(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("SFT step (micro-batch") && err.contains("peak"), "the plan is printed: {err}");
    assert!(
        err.contains("does not fit cuda:0: the SFT step needs") && err.contains("32.00 MiB of 32.00 MiB is free"),
        "{err}"
    );
    assert!(!d.join("data").exists(), "nothing was rendered before the check");
    let out = train(&["--skip-fit-check", "--set", "run.steps=1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("out of GPU memory") && err.contains("(phase "), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

/// actial-train's output and exit status, whatever the status.
fn try_run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_actial-train")).args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn checkpoint_steps(dir: &std::path::Path) -> Vec<usize> {
    actial::train::optimizer::checkpoints_in(dir).unwrap().into_iter().map(|(s, _)| s).collect()
}

/// A run directory belongs to one run (`run.json`): the reproductions of a
/// campaign that lost checkpoints and resumed with other data.
/// - A shorter fresh run into a directory holding a longer run is refused
///   (it used to delete its own checkpoints: pruning sorted by name), and
///   `--overwrite` starts over.
/// - A resume from an earlier checkpoint never prunes the later ones, nor the
///   one it writes.
/// - A resume with changed data, or a changed data file, is refused naming it.
#[test]
fn a_run_directory_belongs_to_one_run() {
    let d = std::env::temp_dir().join(format!("actial-cli-run-dir-{}", std::process::id()));
    let (data, out) = (d.join("data"), d.join("run"));
    synth_data(&d);
    let (o, f) = (out.to_str().unwrap(), format!("{}/viewpoint.jsonl", data.display()));
    let base = ["--recipe", "sft", "--data", &f, "--set", "run.global_batch=2", "--set", "run.micro_batch=2"];
    let with = |extra: &[&str]| -> Vec<String> { base.iter().chain(extra).map(|s| s.to_string()).collect() };
    let long = with(&["--out", o, "--set", "run.steps=4", "--set", "run.save_every=1", "--set", "run.keep_last=3"]);
    run(&args(&long));
    assert_eq!(checkpoint_steps(&out), [2, 3, 4]);
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert!(record["run_id"].is_string() && record["fingerprint"].as_str().unwrap().len() == 64, "{record}");

    // A shorter run into the same directory: refused, nothing deleted.
    let short = with(&["--out", o, "--set", "run.steps=2", "--set", "run.save_every=1"]);
    let (ok, text) = try_run(&args(&short));
    assert!(
        !ok && text.contains("--resume") && text.contains("--overwrite") && text.contains("checkpoint-000004"),
        "{text}"
    );
    assert_eq!(checkpoint_steps(&out), [2, 3, 4]);

    // Resume from checkpoint 2 of the same run, to step 3, keeping 2: the
    // checkpoint it writes and the later one stay.
    let ck2 = out.join("checkpoint-000002").display().to_string();
    let resume =
        with(&["--resume", &ck2, "--set", "run.steps=3", "--set", "run.save_every=1", "--set", "run.keep_last=2"]);
    let text = run(&args(&resume));
    assert!(text.contains("at step 2"), "{text}");
    assert_eq!(checkpoint_steps(&out), [2, 3, 4], "pruning kept the newest of its own past and the later checkpoint");

    // Other data on resume: refused, naming the inputs.
    let other = data.join("other.jsonl");
    let rows = std::fs::read_to_string(&f).unwrap();
    std::fs::write(&other, &rows).unwrap();
    let mut changed = with(&["--resume", o, "--set", "run.steps=5"]);
    changed[3] = other.display().to_string();
    let (ok, text) = try_run(&args(&changed));
    assert!(!ok && text.contains("this resume would change the run") && text.contains("other.jsonl: new"), "{text}");
    // The same file with one answer changed: refused.
    std::fs::write(&f, rows.replacen("\"A\"", "\"B\"", 1)).unwrap();
    let (ok, text) = try_run(&args(&with(&["--resume", o, "--set", "run.steps=5"])));
    assert!(!ok && text.contains("viewpoint.jsonl: its contents changed"), "{text}");
    // A changed setting: refused, with old and new values.
    std::fs::write(&f, &rows).unwrap();
    let (ok, text) = try_run(&args(&with(&["--resume", o, "--set", "optim.weight_decay=0.5"])));
    assert!(!ok && text.contains("optim.weight_decay: 0.0") && text.contains("-> 0.5"), "{text}");

    // --overwrite starts over: the old checkpoints go.
    let mut over = short.clone();
    over.push("--overwrite".into());
    run(&args(&over));
    assert_eq!(checkpoint_steps(&out), [1, 2]);
    // ... and so do the old run's TensorBoard curves: one event file, this run's.
    assert_eq!(std::fs::read_dir(out.join("tb")).unwrap().count(), 1);
    std::fs::remove_dir_all(&d).unwrap();
}

/// A CPU run whose weights and optimizer state alone exceed the memory the
/// system has free stops before loading anything, saying what it needs and
/// what to change (a 72B-sized config: ~1.2 TB of f32 state for full
/// fine-tuning, more than any CI machine has).
#[test]
fn a_cpu_run_that_cannot_hold_its_state_says_so_before_loading() {
    let d = std::env::temp_dir().join(format!("actial-cli-cpu-fit-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/configs/qwen2.5-vl-7b-instruct/config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src).unwrap()).unwrap();
    let text = if cfg.get("text_config").is_some() { &mut cfg["text_config"] } else { &mut cfg };
    (text["hidden_size"], text["intermediate_size"], text["num_hidden_layers"]) =
        (8192.into(), 29568.into(), 80.into());
    (text["num_attention_heads"], text["num_key_value_heads"]) = (64.into(), 8.into());
    cfg["vision_config"]["out_hidden_size"] = 8192.into();
    std::fs::write(d.join("config.json"), cfg.to_string()).unwrap();
    let (ok, text) = try_run(&[
        "--recipe",
        "sft",
        "--out",
        d.join("run").to_str().unwrap(),
        "--set",
        &format!("model.path={:?}", d.display().to_string()),
    ]);
    assert!(!ok && text.contains("weights and optimizer state alone need") && text.contains("lora.enabled"), "{text}");
    assert!(!d.join("run").exists(), "nothing written");
    std::fs::remove_dir_all(&d).unwrap();
}
