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

#[test]
fn prompts_may_start_with_a_dash_and_generation_config_is_honoured() {
    let base = actial::model::tiny::tiny_base_dir();
    let dir = std::env::temp_dir().join(format!("actial-gen-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(&base).unwrap().flatten() {
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    // Qwen2.5-VL-7B-Instruct's generation_config.json.
    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": true, "eos_token_id": [151645, 151643],
            "repetition_penalty": 1.05, "temperature": 0.1, "top_p": 0.001, "top_k": 1}"#,
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_actial-generate"))
            .args(["--model", dir.to_str().unwrap(), "--max-new-tokens", "3", "--prompt", "- item one", "--system"])
            .args(["-a dash too"])
            .args(extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{stderr}");
        stderr
    };
    let stderr = run(&[]);
    assert!(
        stderr.contains("decoding: greedy, repetition_penalty 1.05 (the model's generation_config.json"),
        "{stderr}"
    );
    let stderr = run(&["--greedy"]);
    assert!(stderr.contains("decoding: greedy\n"), "{stderr}");
    std::fs::write(dir.join("generation_config.json"), r#"{"do_sample": true, "top_p": 2}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_actial-generate"))
        .args(["--model", dir.to_str().unwrap(), "--prompt", "hi"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("generation_config.json") && stderr.contains("top_p 2"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
