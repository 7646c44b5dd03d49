//! Benchmark readers on small files in the published layouts
//! (tools/make_benchmark_fixtures.py), scoring rules, and `actial-eval` end to
//! end: run, resume after a kill, compare.

use std::path::{Path, PathBuf};
use std::process::Command;

use actial::data::benchmarks::{Benchmark, Scored, load_benchmark, score};
use actial::data::qa::{ImageRef, QaRecord};
use serde_json::json;

fn fx(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/benchmarks").join(name)
}

/// The flat colour of an image (fixtures use one colour per image).
fn colour(img: &ImageRef) -> [u8; 3] {
    let bytes = match img {
        ImageRef::Bytes(b) => b.clone(),
        ImageRef::Path(p) => std::fs::read(p).unwrap(),
    };
    image::load_from_memory(&bytes).unwrap().to_rgb8().get_pixel(3, 3).0
}

const RED: [u8; 3] = [200, 30, 30];
const GREEN: [u8; 3] = [30, 180, 30];
const BLUE: [u8; 3] = [30, 30, 200];
const GREY: [u8; 3] = [128, 128, 128];

fn answers(r: &[QaRecord]) -> Vec<&str> {
    r.iter().map(|r| r.answer.as_str()).collect()
}

#[test]
fn cvbench_parquet_and_jsonl_read_the_same_items() {
    let pq = load_benchmark(Benchmark::CvBench, &fx("cvbench.parquet"), true).unwrap().records;
    let jl = load_benchmark(Benchmark::CvBench, &fx("cvbench.jsonl"), true).unwrap().records;
    for recs in [&pq, &jl] {
        assert_eq!(answers(recs), ["C", "A", "B", "B", "A"]);
        let kinds: Vec<&str> = recs.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, ["2D/Count", "2D/Relation", "2D/Count", "3D/Depth", "3D/Distance"]);
        let colours: Vec<[u8; 3]> = recs.iter().map(|r| colour(&r.images[0])).collect();
        assert_eq!(colours, [RED, GREEN, BLUE, GREY, RED]);
        assert!(recs[0].prompt.starts_with("<image>How many chairs"));
        assert!(recs[0].prompt.contains("A: 0 B: 1 C: 2 D: 3"), "{}", recs[0].prompt);
        assert_eq!(recs[3].meta["source"], "Omni3D");
        assert_eq!(recs[3].meta["benchmark"], "cvbench");
    }
    assert!(matches!(jl[0].images[0], ImageRef::Path(_)));
}

#[test]
fn blink_reads_up_to_four_images_and_refuses_hidden_answers() {
    let e = load_benchmark(Benchmark::Blink, &fx("blink.parquet"), true).unwrap_err().to_string();
    assert!(e.contains("blink.parquet") && e.contains("row 4") && e.contains("hidden"), "{e}");
    let rep = load_benchmark(Benchmark::Blink, &fx("blink.parquet"), false).unwrap();
    assert_eq!(rep.skipped_total(), 1);
    let r = &rep.records;
    assert_eq!(answers(r), ["B", "A", "B", "D"]);
    assert_eq!(r.iter().map(|r| r.images.len()).collect::<Vec<_>>(), [2, 1, 1, 1]);
    assert_eq!(r[0].images.iter().map(colour).collect::<Vec<_>>(), [RED, BLUE]);
    assert!(r[0].prompt.starts_with("<image><image>Question of"));
    assert_eq!(r[0].kind, "Multi-view_Reasoning");
}

#[test]
fn mmsi_keeps_options_in_the_question_and_checks_the_letter() {
    let e = load_benchmark(Benchmark::Mmsi, &fx("mmsi.parquet"), true).unwrap_err().to_string();
    assert!(e.contains("mmsi.parquet") && e.contains("row 2"), "{e}");
    let rep = load_benchmark(Benchmark::Mmsi, &fx("mmsi.parquet"), false).unwrap();
    let r = &rep.records;
    assert_eq!(answers(r), ["C", "A"]);
    assert_eq!(r[1].images.iter().map(colour).collect::<Vec<_>>(), [GREEN, GREY, RED]);
    assert!(r[0].prompt.starts_with("<image><image>Where is camera 2"));
    assert!(r[0].prompt.contains("Options: A: left"));
    assert_eq!(r[0].kind, "Camera-Camera");
}

#[test]
fn threedsr_tsv_circular_groups_shared_images_and_bad_base64() {
    let e = load_benchmark(Benchmark::ThreeDsr, &fx("3dsrbench.tsv"), true).unwrap_err().to_string();
    assert!(e.contains("3dsrbench.tsv") && e.contains("row 7") && e.contains("undecodable"), "{e}");
    let rep = load_benchmark(Benchmark::ThreeDsr, &fx("3dsrbench.tsv"), false).unwrap();
    let r = &rep.records;
    assert_eq!(answers(r), ["A", "B", "C", "B", "A"]);
    let groups: Vec<String> = r.iter().map(|r| r.meta["group"].as_str().unwrap().to_string()).collect();
    assert_eq!(groups, ["1", "1", "2", "2", "2"]);
    // A copy naming the first row's index shares its image.
    assert_eq!(colour(&r[1].images[0]), RED);
    assert_eq!(colour(&r[4].images[0]), BLUE);
    // Every copy's letter points at the same option text.
    for rec in &r[2..5] {
        let letter = rec.answer.as_str();
        assert!(rec.prompt.contains(&format!("{letter}: towards the camera")), "{}", rec.prompt);
    }

    // Circular scoring: a question counts only when all its copies are right.
    let metas: Vec<serde_json::Value> = r.iter().map(|r| r.meta.clone()).collect();
    let items: Vec<Scored> = [true, true, true, false, true]
        .iter()
        .zip(r)
        .zip(&metas)
        .map(|((&correct, rec), meta)| Scored { kind: &rec.kind, meta, correct })
        .collect();
    let s = score(Benchmark::ThreeDsr, &items);
    assert_eq!((s.questions, s.items), (2, 5));
    assert_eq!(s.overall, 0.5);
    assert_eq!(s.item_accuracy, 0.8);
    assert_eq!(s.categories["height_higher"], (1.0, 1));
    assert_eq!(s.categories["orientation_on_the_left"], (0.0, 1));
}

#[test]
fn cvbench_overall_averages_2d_sources_then_2d_and_3d() {
    let m = |ty: &str, src: &str, i: usize| json!({"type": ty, "source": src, "group": i.to_string()});
    // ADE20K 1/2, COCO 2/2 -> 2D = 0.75; Omni3D 1/4 -> 3D = 0.25; overall 0.5.
    let rows = [
        ("2D/Count", m("2D", "ADE20K", 0), true),
        ("2D/Count", m("2D", "ADE20K", 1), false),
        ("2D/Relation", m("2D", "COCO", 2), true),
        ("2D/Relation", m("2D", "COCO", 3), true),
        ("3D/Depth", m("3D", "Omni3D", 4), true),
        ("3D/Depth", m("3D", "Omni3D", 5), false),
        ("3D/Distance", m("3D", "Omni3D", 6), false),
        ("3D/Distance", m("3D", "Omni3D", 7), false),
    ];
    let items: Vec<Scored> = rows.iter().map(|(k, meta, c)| Scored { kind: k, meta, correct: *c }).collect();
    let s = score(Benchmark::CvBench, &items);
    assert!((s.overall - 0.5).abs() < 1e-12, "{s:?}");
    assert!((s.item_accuracy - 0.5).abs() < 1e-12);
    assert_eq!(s.categories["2D/Relation"], (1.0, 2));
    // Plain accuracy elsewhere: 4 of 8.
    assert_eq!(score(Benchmark::Blink, &items).overall, 0.5);
}

#[test]
fn unknown_benchmark_names_are_refused_with_the_list() {
    let e = "vqa".parse::<Benchmark>().unwrap_err();
    assert!(e.contains("cvbench") && e.contains("3dsrbench"), "{e}");
    assert_eq!("3DSRBench".parse::<Benchmark>().unwrap(), Benchmark::ThreeDsr);
    assert_eq!("CV-Bench".parse::<Benchmark>().unwrap(), Benchmark::CvBench);
}

fn eval(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_actial-eval")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn actial_eval_runs_resumes_and_compares() {
    let dir = std::env::temp_dir().join(format!("actial-eval-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (a, b) = (dir.join("a"), dir.join("b"));
    let cv = format!("cvbench={}", fx("cvbench.parquet").display());
    let sr = format!("3dsrbench={}", fx("3dsrbench.tsv").display());
    let common = ["--model", "tiny-random", "--batch", "2", "--max-new-tokens", "4"];
    // A bad row stops the run (naming it) unless --skip-bad.
    let (ok, _, err) = eval(&[&["run"], &common[..], &["--bench", &sr, "--out", a.to_str().unwrap()]].concat());
    assert!(!ok && err.contains("3dsrbench.tsv") && err.contains("row 7"), "{err}");
    let run_a: Vec<&str> =
        [&["run"], &common[..], &["--bench", &cv, "--bench", &sr, "--skip-bad", "--out", a.to_str().unwrap()]].concat();
    let (ok, out, err) = eval(&run_a);
    assert!(ok, "{err}");
    assert!(out.contains("cvbench:") && out.contains("3dsrbench:"), "{out}");
    let items = a.join("3dsrbench.items.jsonl");
    let full = std::fs::read_to_string(&items).unwrap();
    assert_eq!(full.lines().count(), 5);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["benchmarks"]["3dsrbench"]["questions"], 2);
    assert_eq!(report["benchmarks"]["3dsrbench"]["skipped_rows"].as_object().unwrap().len(), 1);
    assert_eq!(report["benchmarks"]["cvbench"]["items"], 5);

    // A killed run: two finished lines and half a third. The rerun redoes only the rest.
    let lines: Vec<&str> = full.lines().collect();
    let cut = format!("{}\n{}\n{}", lines[0], lines[1], &lines[2][..lines[2].len() / 2]);
    std::fs::write(&items, cut).unwrap();
    let (ok, _, err) = eval(&run_a);
    assert!(ok, "{err}");
    assert!(err.contains("resuming, 2 items already done, 3 to go"), "{err}");
    let again = std::fs::read_to_string(&items).unwrap();
    assert_eq!(again, full, "greedy decoding is deterministic: the resumed file equals the first");

    // Other settings in the same directory are refused.
    let (ok, _, err) = eval(&[&run_a[..], &["--max-pixels", "12544"]].concat());
    assert!(!ok && err.contains("other settings"), "{err}");
    // So is another file under a benchmark name that has answers (it used to
    // say "0 to go" and score the first file's answers as the second's).
    let other = dir.join("3dsrbench-other.tsv");
    let tsv = std::fs::read_to_string(fx("3dsrbench.tsv")).unwrap();
    std::fs::write(&other, tsv.replacen("\tA\theight_higher", "\tB\theight_higher", 1)).unwrap();
    let sr2 = format!("3dsrbench={}", other.display());
    let (ok, _, err) =
        eval(&[&["run"], &common[..], &["--bench", &sr2, "--skip-bad", "--out", a.to_str().unwrap()]].concat());
    assert!(!ok && err.contains("3dsrbench") && err.contains("holds 5 answers to"), "{err}");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("run.json")).unwrap()).unwrap();
    assert_eq!(record["benchmarks"]["3dsrbench"]["sha256"].as_str().unwrap().len(), 64, "{record}");
    // A run that failed before its first answer does not lock its directory.
    let c = dir.join("c");
    let (ok, _, _) = eval(&[&["run"], &common[..], &["--bench", &sr, "--out", c.to_str().unwrap()]].concat());
    assert!(!ok);
    let (ok, _, err) = eval(
        &[
            &["run"],
            &common[..],
            &["--bench", &sr, "--skip-bad", "--max-pixels", "12544", "--out", c.to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(ok, "{err}");

    let (ok, _, err) =
        eval(&[&["run"], &common[..], &["--bench", &cv, "--limit", "3", "--out", b.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    let (ok, table, err) = eval(&["compare", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(table.contains("| **cvbench** |") && table.contains("Δ"), "{table}");
    assert!(table.contains("| cvbench / 2D/Count |"), "{table}");
    assert!(table.contains("| **3dsrbench** |") && table.contains(" - |"), "{table}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_image_file_names_the_row() {
    let dir = std::env::temp_dir().join(format!("actial-bench-missing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("test_2d.jsonl");
    let good = std::fs::read_to_string(fx("cvbench.jsonl")).unwrap();
    let first = good.lines().next().unwrap().replace("images/cv_0.png", "img/2D/count/nowhere.png");
    std::fs::write(&f, format!("{first}\n")).unwrap();
    let e = load_benchmark(Benchmark::CvBench, &f, true).unwrap_err().to_string();
    assert!(e.contains("test_2d.jsonl") && e.contains("row 1") && e.contains("nowhere.png"), "{e}");
    let rep = load_benchmark(Benchmark::CvBench, &f, false).unwrap();
    assert_eq!((rep.records.len(), rep.skipped_total()), (0, 1));
    let _ = std::fs::remove_dir_all(&dir);
}
