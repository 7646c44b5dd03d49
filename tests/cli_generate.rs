//! The actial-generate binary end to end on the tiny preset.

use std::process::Command;

use actial::model::Checkpoint;

#[test]
fn generates_and_dumps_prompt_logits() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let out_file = std::env::temp_dir().join(format!("actial-logits-{}.safetensors", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_actial-generate"))
        .args(["--model", "tiny", "--max-new-tokens", "5", "--prompt", "Did the camera move? A: left B: right"])
        .args([
            "--image",
            &format!("{dir}/tests/fixtures/images/a.png"),
            "--image",
            &format!("{dir}/tests/fixtures/images/b.jpg"),
        ])
        .arg("--dump-logits")
        .arg(&out_file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("prompt tokens") && stderr.contains("new tokens"), "{stderr}");
    let logits = Checkpoint::open(&out_file).unwrap().tensor("logits").unwrap();
    let stats = stderr.lines().find(|l| l.contains("prompt tokens")).unwrap();
    let prompt_len: usize = stats.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(logits.dims(), &[prompt_len, actial::model::tiny::tiny_tokenizer().unwrap().vocab_size()]);
    std::fs::remove_file(&out_file).unwrap();
}

#[test]
fn bad_inputs_fail_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_actial-generate"))
        .args(["--model", "tiny", "--prompt", "hi", "--image", "/nonexistent/x.png"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/x.png"), "{stderr}");
}
