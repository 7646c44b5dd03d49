//! actial-data end to end: synth -> stats -> inspect -> mix, and build on the
//! committed COLMAP capture.

use std::process::Command;

use actial::data::formats::load_sharegpt;
use actial::data::mix::cot_answer;

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_actial-data")).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "actial-data {args:?} failed:\n{text}");
    text
}

#[test]
fn synth_stats_inspect_mix_build() {
    let d = std::env::temp_dir().join(format!("actial-cli-data-{}", std::process::id()));
    let ds = d.display().to_string();
    let out = run(&["synth", "--out", &ds, "--pairs", "12", "--seed", "4"]);
    assert!(out.contains("12 pairs") && out.contains("36 viewpoint items"), "{out}");
    let vp = load_sharegpt(&d.join("viewpoint.jsonl"), true).unwrap();
    assert_eq!(vp.records.len(), 36);
    assert!(d.join("images/000011_b.png").is_file());
    assert_eq!(std::fs::read_to_string(d.join("manifest.jsonl")).unwrap().lines().count(), 12);
    let stats = run(&["stats", &format!("{ds}/viewpoint.jsonl")]);
    assert!(stats.contains("camera_rotation") && stats.contains("0 image files missing"), "{stats}");
    run(&["inspect", &format!("{ds}/sat.jsonl"), "--out", &format!("{ds}/sheet.png"), "--n", "4"]);
    let sheet = image::open(d.join("sheet.png")).unwrap();
    assert!(sheet.width() > 400 && sheet.height() > 4 * 112);
    let mix = run(&[
        "mix",
        "--letters",
        &format!("{ds}/viewpoint.jsonl"),
        "--out",
        &format!("{ds}/mix.jsonl"),
        "--cot-fraction",
        "0.25",
    ]);
    assert!(mix.contains("36 letter-only + 12 CoT slots"), "{mix}");
    let m = load_sharegpt(&d.join("mix.jsonl"), true).unwrap().records;
    assert_eq!(m.iter().filter(|r| cot_answer(&r.response).is_some()).count(), 12);
    let colmap = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/colmap");
    let built = run(&["build", "--captures", colmap, "--out", &format!("{ds}/real"), "--max-pairs-per-capture", "6"]);
    assert!(built.contains("18 items (6 pairs)") && built.contains("skipped: pair: yaw above the maximum"), "{built}");
    assert!(run(&["stats", &format!("{ds}/real/viewpoint.jsonl")]).contains("0 image files missing"));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn bad_inputs_fail_clearly() {
    let out = Command::new(env!("CARGO_BIN_EXE_actial-data"))
        .args(["build", "--captures", "/nonexistent", "--out", "/tmp/x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent"));
    let out = Command::new(env!("CARGO_BIN_EXE_actial-data"))
        .args(["mix", "--letters", "/nonexistent.jsonl", "--out", "/tmp/x.jsonl"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// `stats` reads every image's header: a file that exists but is no image,
/// or declares too many pixels, is reported by name (it used to pass).
#[test]
fn stats_reads_every_image_header() {
    let d = std::env::temp_dir().join(format!("actial-stats-headers-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("junk.png"), b"this is no image").unwrap();
    let row = r#"{"messages": [{"role": "user", "content": "<image>q"}, {"role": "assistant", "content": "A"}], "images": ["junk.png"]}"#;
    std::fs::write(d.join("data.jsonl"), format!("{row}\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_actial-data"))
        .args(["stats", d.join("data.jsonl").to_str().unwrap()])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("junk.png: cannot read the image header") && text.contains("1 unreadable"), "{text}");
    std::fs::remove_dir_all(&d).unwrap();
}
