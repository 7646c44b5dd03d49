//! actial-train --recipe sft end to end on a tiny synthetic set: metrics, plots,
//! checkpoints, resume, merge-lora.

use std::process::Command;

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_actial-train")).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "actial-train {args:?} failed:\n{text}");
    text
}

#[test]
fn sft_runs_resumes_and_merges() {
    let d = std::env::temp_dir().join(format!("actial-cli-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let data = d.join("data");
    let st = Command::new(env!("CARGO_BIN_EXE_actial-data"))
        .args(["synth", "--out", data.to_str().unwrap(), "--pairs", "6", "--size", "56", "--supersample", "1"])
        .status()
        .unwrap();
    assert!(st.success());
    let out = d.join("run");
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
