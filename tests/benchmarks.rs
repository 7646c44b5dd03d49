//! Benchmark readers on small files in the published layouts
//! (tools/make_benchmark_fixtures.py), row for row; each published scoring rule
//! by hand; `actial-eval` end to end: run, resume after a kill, a download that
//! was cut short, compare; bounded memory on a large generated TSV.

use std::path::{Path, PathBuf};
use std::process::Command;

use actial::data::benchmarks::{
    Benchmark, PromptStyle, ReadOptions, Scored, Scoring, load_benchmark, load_benchmark_files, parse_bench_specs,
    score,
};
use actial::data::qa::{ImageRef, QaRecord};
use actial::train::eval::{AnswerExtractor, Extraction};
use serde_json::{Value, json};

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

fn kinds(r: &[QaRecord]) -> Vec<&str> {
    r.iter().map(|r| r.kind.as_str()).collect()
}

fn metas(r: &[QaRecord], key: &str) -> Vec<String> {
    r.iter().map(|r| r.meta[key].as_str().map(String::from).unwrap_or_else(|| r.meta[key].to_string())).collect()
}

fn read(b: Benchmark, files: &[PathBuf], strict: bool) -> actial::Result<actial::data::formats::LoadReport> {
    load_benchmark_files(b, files, ReadOptions { strict, ..Default::default() })
}

fn spec(s: &str) -> Vec<PathBuf> {
    parse_bench_specs(&[s.to_string()]).unwrap().remove(0).1
}

/// Items with the given correctness, in record order.
fn scored<'a>(recs: &'a [QaRecord], correct: &[bool]) -> Vec<Scored<'a>> {
    assert_eq!(recs.len(), correct.len());
    recs.iter().zip(correct).map(|(r, &c)| Scored { kind: &r.kind, meta: &r.meta, correct: c }).collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn threedsr_circular_tsv_groups_by_qid_and_keeps_flips_apart() {
    let f = fx("3dsrbench/3dsrbench_v1_vlmevalkit_circular.tsv");
    let e = load_benchmark(Benchmark::ThreeDsr, &f, true).unwrap_err().to_string();
    assert!(e.contains("3dsrbench_v1_vlmevalkit_circular.tsv") && e.contains("line 9"), "{e}");
    assert!(e.contains("column image: undecodable"), "{e}");
    let rep = load_benchmark(Benchmark::ThreeDsr, &f, false).unwrap();
    assert_eq!(rep.skipped_total(), 1);
    let r = &rep.records;
    assert_eq!(answers(r), ["A", "B", "A", "B", "C", "B", "A", "B", "A"]);
    assert_eq!(metas(r, "group"), ["q1", "q1", "q1-flip", "q1-flip", "q2", "q2", "q2", "q4", "q4"]);
    assert_eq!(metas(r, "qid")[3], "q1-flip-1");
    assert_eq!(metas(r, "type"), [&["height"; 4][..], &["orientation"; 3], &["multi_object"; 2]].concat());
    assert_eq!(kinds(r)[4], "orientation_on_the_left");
    let colours: Vec<[u8; 3]> = r.iter().map(|r| colour(&r.images[0])).collect();
    assert_eq!(colours, [RED, RED, GREEN, GREEN, BLUE, BLUE, BLUE, GREY, GREY]);
    // Every copy's letter points at the same option text.
    for rec in &r[4..7] {
        assert!(rec.prompt.contains(&format!("{}: towards the camera", rec.answer)), "{}", rec.prompt);
    }

    // q1 right in both copies, its flip wrong in one, q2 right in all three,
    // q4 wrong in one: 2 of 4 questions.
    let items = scored(r, &[true, true, true, false, true, true, true, false, true]);
    let s = score(Benchmark::ThreeDsr, &items, Scoring::Published);
    assert_eq!((s.questions, s.items), (4, 9));
    assert!(close(s.overall, 0.5), "{s:?}");
    assert!(close(s.item_accuracy, 7.0 / 9.0));
    assert_eq!(s.categories["height_higher"], (0.5, 2));
    assert_eq!(s.categories["orientation_on_the_left"], (1.0, 1));
    assert_eq!(s.breakdown["height"], (0.5, 2));
    assert_eq!(s.breakdown["multi_object"], (0.0, 1));
    let p = score(Benchmark::ThreeDsr, &items, Scoring::Plain);
    assert!(close(p.overall, 7.0 / 9.0) && p.questions == 9, "{p:?}");
}

#[test]
fn blink_directory_reads_every_subtask_and_reports_hidden_answers_as_unscorable() {
    let files = spec(&format!("blink={}", fx("blink").display()));
    assert_eq!(files.len(), 8, "{files:?}");
    // Hidden answers are not errors, even when strict.
    let rep = read(Benchmark::Blink, &files, true).unwrap();
    assert_eq!(rep.unscorable.values().sum::<usize>(), 4, "{:?}", rep.unscorable);
    assert_eq!(rep.skipped_total(), 0);
    let r = &rep.records;
    assert_eq!(
        kinds(r),
        ["Counting", "Multi-view_Reasoning", "Multi-view_Reasoning", "Relative_Depth", "Spatial_Relation"]
    );
    assert_eq!(answers(r), ["D", "B", "A", "A", "B"]);
    assert_eq!(r[1].images.iter().map(colour).collect::<Vec<_>>(), [RED, BLUE]);
    assert!(r[1].prompt.starts_with("<image><image>Question of val_Multi-view_Reasoning_1"), "{}", r[1].prompt);
    // Subtask mean: Counting 1, Multi-view 1/2, Relative_Depth 1, Spatial 0
    // -> 0.625; the mean over items would be 3/5.
    let s = score(Benchmark::Blink, &scored(r, &[true, true, false, true, false]), Scoring::Published);
    assert!(close(s.overall, 0.625), "{s:?}");
    assert!(close(s.item_accuracy, 0.6));
    assert_eq!(s.rule, "mean of the subtask accuracies");
    let p = score(Benchmark::Blink, &scored(r, &[true, true, false, true, false]), Scoring::Plain);
    assert!(close(p.overall, 0.6));
}

#[test]
fn cvbench_reads_the_same_items_from_parquet_jsonl_and_vlmevalkit_tsvs() {
    for dir in ["parquet", "jsonl", "vlmevalkit"] {
        let files = spec(&format!("cvbench={}", fx(&format!("cvbench/{dir}")).display()));
        assert_eq!(files.len(), 2, "{files:?}");
        let r = read(Benchmark::CvBench, &files, true).unwrap().records;
        assert_eq!(answers(&r), ["C", "A", "B", "B", "A"], "{dir}");
        assert_eq!(kinds(&r), ["2D/Count", "2D/Relation", "2D/Count", "3D/Depth", "3D/Distance"], "{dir}");
        assert_eq!(metas(&r, "source"), ["ADE20K", "COCO", "COCO", "Omni3D", "Omni3D"], "{dir}");
        let colours: Vec<[u8; 3]> = r.iter().map(|r| colour(&r.images[0])).collect();
        assert_eq!(colours, [RED, GREEN, BLUE, GREY, RED], "{dir}");
        assert!(r[0].prompt.starts_with("<image>How many chairs"), "{}", r[0].prompt);
        assert!(r[0].prompt.contains("A: 0 B: 1 C: 2 D: 3"), "{}", r[0].prompt);
        assert_eq!(r[3].meta["benchmark"], "cvbench");
        // ADE20K 1/1, COCO 1/2 -> 2D 0.75; Omni3D 1/2 -> 3D 0.5; overall 0.625.
        let s = score(Benchmark::CvBench, &scored(&r, &[true, true, false, false, true]), Scoring::Published);
        assert!(close(s.overall, 0.625), "{dir}: {s:?}");
        assert_eq!(s.breakdown["2D/COCO"], (0.5, 2));
        assert_eq!(s.breakdown["3D"], (0.5, 2));
        let p = score(Benchmark::CvBench, &scored(&r, &[true, true, false, false, true]), Scoring::Plain);
        assert!(close(p.overall, 0.6));
    }
}

#[test]
fn mmsi_reads_its_own_tsv_parquet_and_vlmevalkits_circular_files() {
    for (name, strict_err) in [("mmsi/MMSI_bench.tsv", "line 6"), ("mmsi/test.parquet", "row 2")] {
        let e = load_benchmark(Benchmark::Mmsi, &fx(name), true).unwrap_err().to_string();
        assert!(e.contains(name.split('/').nth(1).unwrap()) && e.contains(strict_err), "{e}");
        assert!(e.contains("column answer"), "{e}");
        let rep = load_benchmark(Benchmark::Mmsi, &fx(name), false).unwrap();
        let r = &rep.records;
        assert_eq!(answers(r), ["C", "A"], "{name}");
        assert_eq!(r[0].images.iter().map(colour).collect::<Vec<_>>(), [RED, BLUE], "{name}");
        assert_eq!(r[1].images.iter().map(colour).collect::<Vec<_>>(), [GREEN, GREY, RED], "{name}");
        assert!(r[0].prompt.starts_with("<image><image>Where is camera 2"), "{}", r[0].prompt);
        assert!(r[0].prompt.contains("Options: A: left"), "{}", r[0].prompt);
        assert_eq!(r[0].kind, "Positional Relationship (Cam.-Cam.)");
    }
    let plain = load_benchmark(Benchmark::Mmsi, &fx("mmsi/MMSIBench_wo_circular.tsv"), true).unwrap().records;
    assert_eq!((answers(&plain), kinds(&plain)), (vec!["C", "A"], vec!["Cam-Cam", "Meas"]));
    // Circular: every copy names row 0 or 1, whose cell is a list of images.
    let circ = load_benchmark(Benchmark::Mmsi, &fx("mmsi/MMSIBench_circular.tsv"), true).unwrap().records;
    assert_eq!(circ.len(), 6);
    assert_eq!(metas(&circ, "group"), ["0", "1", "0", "1", "0", "0"]);
    for r in &circ {
        let want = if r.meta["group"] == "0" { vec![RED, BLUE] } else { vec![GREEN, GREY, RED] };
        assert_eq!(r.images.iter().map(colour).collect::<Vec<_>>(), want, "{}", r.id);
        let truth = if r.meta["group"] == "0" { "front" } else { "the box" };
        assert!(r.prompt.contains(&format!("{}: {truth}", r.answer)), "{}", r.prompt);
    }
    // Group 0 wrong in its last copy, group 1 right twice: 1 of 2.
    let s = score(Benchmark::Mmsi, &scored(&circ, &[true, true, true, true, true, false]), Scoring::Published);
    assert!(close(s.overall, 0.5) && s.questions == 2, "{s:?}");
}

#[test]
fn sat_is_asked_once_per_rotation_of_its_options_under_the_published_rule() {
    let f = [fx("sat/test.parquet")];
    let r = load_benchmark_files(Benchmark::Sat, &f, ReadOptions::default()).unwrap().records;
    assert_eq!(r.len(), 5);
    assert_eq!(metas(&r, "group"), ["row0", "row0", "row1", "row1", "row1"]);
    assert_eq!(answers(&r), ["B", "A", "C", "B", "A"]);
    for rec in &r {
        let truth = if rec.meta["group"] == "row0" { "right" } else { "the cup" };
        assert!(rec.prompt.contains(&format!("{}: {truth}", rec.answer)), "{}", rec.prompt);
    }
    assert_eq!(r[0].images.iter().map(colour).collect::<Vec<_>>(), [RED, BLUE]);
    assert_eq!(kinds(&r), ["ego_movement", "ego_movement", "perspective", "perspective", "perspective"]);
    // row0 right both times; row1 wrong once: circular 1/2, plain (file order
    // only) 2/2.
    let items = scored(&r, &[true, true, true, false, true]);
    let s = score(Benchmark::Sat, &items, Scoring::Published);
    assert!(close(s.overall, 0.5) && s.questions == 2, "{s:?}");
    assert!(close(s.item_accuracy, 1.0));
    let plain_opts = ReadOptions { scoring: Scoring::Plain, ..Default::default() };
    let r = load_benchmark_files(Benchmark::Sat, &f, plain_opts).unwrap().records;
    assert_eq!(answers(&r), ["B", "C"]);
}

#[test]
fn viewpoint_sharegpt_rows_get_their_question_type_from_the_text() {
    let r = load_benchmark(Benchmark::Viewpoint, &fx("viewpoint/test.json"), true).unwrap().records;
    assert_eq!(kinds(&r), ["camera_translation", "object_translation", "camera_rotation"]);
    assert_eq!(answers(&r), ["B", "C", "B"]);
    assert_eq!(r[0].images.iter().map(colour).collect::<Vec<_>>(), [RED, BLUE]);
}

#[test]
fn the_actial_prompt_style_is_vlmevalkits_and_reads_answers_as_the_release_does() {
    let opts = ReadOptions { style: PromptStyle::Actial, ..Default::default() };
    let r =
        load_benchmark_files(Benchmark::CvBench, &spec(&format!("cvbench={}", fx("cvbench/parquet").display())), opts)
            .unwrap()
            .records;
    assert_eq!(
        r[1].prompt,
        "<image>Question: Is the cup left of the plate?\nOptions:\nA. left\nB. right\n\
         Please select the correct answer from the options above. \n"
    );
    let m = load_benchmark_files(Benchmark::Mmsi, &[fx("mmsi/MMSI_bench.tsv")], ReadOptions { strict: false, ..opts })
        .unwrap()
        .records;
    assert!(m[0].prompt.ends_with("Enclose the option's letter within ``."), "{}", m[0].prompt);

    let ex = AnswerExtractor::actial();
    assert_eq!(ex.extract("<think>A or B?</think><answer>B</answer>"), (Some("B".into()), Extraction::AnswerTag));
    assert_eq!(ex.extract("<answer>(C) front</answer>"), (Some("C".into()), Extraction::AnswerTag));
    assert_eq!(ex.extract("<think>A looks wrong</think>So: D."), (Some("D".into()), Extraction::AfterThink));
    assert_eq!(ex.extract("<think>maybe A</think>no idea"), (None, Extraction::None));
    assert_eq!(ex.extract("B"), (Some("B".into()), Extraction::BareLetter));
    // The default reader takes the first letter anywhere, even inside <think>.
    let d = AnswerExtractor::default();
    assert_eq!(d.extract("<think>A looks wrong</think>So: D."), (Some("A".into()), Extraction::LetterInText));
}

#[test]
fn bench_specs_take_lists_and_directories_and_refuse_repeats() {
    let two = format!(
        "{},{}",
        fx("cvbench/parquet/test_2d.parquet").display(),
        fx("cvbench/parquet/test_3d.parquet").display()
    );
    assert_eq!(spec(&format!("cvbench={two}")).len(), 2);
    let e = parse_bench_specs(&[format!("cvbench={two}"), format!("CV-Bench={}", fx("cvbench/jsonl").display())])
        .unwrap_err()
        .to_string();
    assert!(e.contains("given twice") && e.contains("cvbench=F1,F2"), "{e}");
    let e = parse_bench_specs(&[format!("sat={}", fx("nowhere.parquet").display())]).unwrap_err().to_string();
    assert!(e.contains("nowhere.parquet") && e.contains("no such file"), "{e}");
    let empty = std::env::temp_dir().join(format!("actial-empty-bench-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let e = parse_bench_specs(&[format!("sat={}", empty.display())]).unwrap_err().to_string();
    assert!(e.contains("no .tsv, .parquet"), "{e}");
    let _ = std::fs::remove_dir_all(&empty);
    let e = "vqa".parse::<Benchmark>().unwrap_err();
    assert!(e.contains("cvbench") && e.contains("3dsrbench"), "{e}");
    assert_eq!("3DSRBench".parse::<Benchmark>().unwrap(), Benchmark::ThreeDsr);
    assert_eq!("CV-Bench".parse::<Benchmark>().unwrap(), Benchmark::CvBench);
}

#[test]
fn a_missing_image_file_names_the_row() {
    let dir = std::env::temp_dir().join(format!("actial-bench-missing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("test_2d.jsonl");
    let good = std::fs::read_to_string(fx("cvbench/jsonl/test_2d.jsonl")).unwrap();
    let first = good.lines().next().unwrap().replace("img/2D/count/ade20k_1.png", "img/2D/count/nowhere.png");
    std::fs::write(&f, format!("{first}\n")).unwrap();
    let e = load_benchmark(Benchmark::CvBench, &f, true).unwrap_err().to_string();
    assert!(e.contains("test_2d.jsonl") && e.contains("line 1") && e.contains("nowhere.png"), "{e}");
    let rep = load_benchmark(Benchmark::CvBench, &f, false).unwrap();
    assert_eq!((rep.records.len(), rep.skipped_total()), (0, 1));
    let _ = std::fs::remove_dir_all(&dir);
}

fn eval(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_actial-eval")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn report(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

#[test]
fn actial_eval_runs_resumes_and_compares() {
    let dir = std::env::temp_dir().join(format!("actial-eval-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (a, b) = (dir.join("a"), dir.join("b"));
    let cv = format!("cvbench={}", fx("cvbench/parquet").display());
    let sr = format!("3dsrbench={}", fx("3dsrbench/3dsrbench_v1_vlmevalkit_circular.tsv").display());
    let bl = format!("blink={}", fx("blink").display());
    let common = ["--model", "tiny-random", "--batch", "2", "--max-new-tokens", "4"];
    // A bad row stops the run (naming it) unless --skip-bad.
    let (ok, _, err) = eval(&[&["run"], &common[..], &["--bench", &sr, "--out", a.to_str().unwrap()]].concat());
    assert!(!ok && err.contains("circular.tsv") && err.contains("line 9"), "{err}");
    let run_a: Vec<&str> = [
        &["run"],
        &common[..],
        &["--bench", &cv, "--bench", &sr, "--bench", &bl, "--skip-bad", "--out", a.to_str().unwrap()],
    ]
    .concat();
    let (ok, out, err) = eval(&run_a);
    assert!(ok, "{err}");
    assert!(out.contains("cvbench:") && out.contains("3dsrbench:") && out.contains("blink:"), "{out}");
    assert!(err.contains("blink: 4 rows not scorable: answer hidden"), "{err}");
    let items = a.join("3dsrbench.items.jsonl");
    let full = std::fs::read_to_string(&items).unwrap();
    assert_eq!(full.lines().count(), 9);
    let rep = report(&a);
    let sr_rep = &rep["benchmarks"]["3dsrbench"];
    assert_eq!(sr_rep["questions"], 4);
    assert_eq!(sr_rep["skipped_rows"], json!({"column image: undecodable image": 1}));
    assert_eq!(rep["benchmarks"]["cvbench"]["items"], 5);
    assert_eq!(rep["benchmarks"]["blink"]["unscorable"], 4);
    assert_eq!(rep["benchmarks"]["blink"]["rule"], "mean of the subtask accuracies");

    // The headline in the report is the published rule over the items file.
    let lines: Vec<Value> = full.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let by_q = |q: &str| lines.iter().filter(|v| v["meta"]["group"] == q).all(|v| v["correct"] == true);
    let right = ["q1", "q1-flip", "q2", "q4"].iter().filter(|q| by_q(q)).count();
    assert!(close(sr_rep["overall"].as_f64().unwrap(), right as f64 / 4.0), "{sr_rep}");

    // A killed run: two finished lines and half a third. The rerun redoes only the rest.
    let kept: Vec<&str> = full.lines().collect();
    let cut = format!("{}\n{}\n{}", kept[0], kept[1], &kept[2][..kept[2].len() / 2]);
    std::fs::write(&items, cut).unwrap();
    let (ok, _, err) = eval(&run_a);
    assert!(ok, "{err}");
    assert!(err.contains("3dsrbench: resuming, 2 items already done"), "{err}");
    let again = std::fs::read_to_string(&items).unwrap();
    assert_eq!(again, full, "greedy decoding is deterministic: the resumed file equals the first");

    // Other settings in the same directory are refused.
    let (ok, _, err) = eval(&[&run_a[..], &["--max-pixels", "12544"]].concat());
    assert!(!ok && err.contains("other settings"), "{err}");
    let (ok, _, err) = eval(&[&run_a[..], &["--scoring", "plain"]].concat());
    assert!(!ok && err.contains("other settings"), "{err}");
    // So is another file under a benchmark name that has answers.
    let other = dir.join("3dsrbench-other.tsv");
    let tsv = std::fs::read_to_string(fx("3dsrbench/3dsrbench_v1_vlmevalkit_circular.tsv")).unwrap();
    std::fs::write(&other, tsv.replacen("\tA\theight_higher", "\tB\theight_higher", 1)).unwrap();
    let sr2 = format!("3dsrbench={}", other.display());
    let (ok, _, err) =
        eval(&[&["run"], &common[..], &["--bench", &sr2, "--skip-bad", "--out", a.to_str().unwrap()]].concat());
    assert!(!ok && err.contains("3dsrbench") && err.contains("holds 9 answers to"), "{err}");
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
    assert!(table.contains("| cvbench / 2D/Count |") && table.contains("| cvbench / 2D/ADE20K |"), "{table}");
    assert!(table.contains("| **3dsrbench** |") && table.contains(" - |"), "{table}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_download_cut_short_is_read_up_to_its_cut_and_resumes_when_complete() {
    let dir = std::env::temp_dir().join(format!("actial-eval-cut-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let full = std::fs::read(fx("mmsi/MMSIBench_circular.tsv")).unwrap();
    let f = dir.join("MMSIBench_circular.tsv");
    // Cut in the middle of the fourth data row (line 5).
    let line_starts: Vec<usize> = full.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i + 1).collect();
    let cut = line_starts[3] + 20;
    std::fs::write(&f, &full[..cut]).unwrap();
    let e = load_benchmark(Benchmark::Mmsi, &f, true).unwrap_err().to_string();
    assert!(e.contains("line 5") && e.contains("truncated"), "{e}");
    let out = dir.join("run");
    let bench = format!("mmsi={}", f.display());
    let args = ["run", "--model", "tiny-random", "--max-new-tokens", "2", "--skip-bad", "--bench", &bench, "--out"];
    let (ok, _, err) = eval(&[&args[..], &[out.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    assert!(err.contains("1 rows skipped"), "{err}");
    assert_eq!(std::fs::read_to_string(out.join("mmsi.items.jsonl")).unwrap().lines().count(), 3);
    // The whole file arrives: the three answers stand, the rest is asked.
    std::fs::write(&f, &full).unwrap();
    let (ok, _, err) = eval(&[&args[..], &[out.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    assert!(err.contains("grew since the last run") && err.contains("resuming, 3 items already done"), "{err}");
    assert_eq!(std::fs::read_to_string(out.join("mmsi.items.jsonl")).unwrap().lines().count(), 6);
    assert_eq!(report(&out)["benchmarks"]["mmsi"]["questions"], 2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A 3DSRBench-layout TSV of `rows` rows, each with a full image (a noise PNG,
/// so it does not compress).
fn large_tsv(path: &Path, rows: usize) -> u64 {
    use base64::Engine;
    use std::io::Write;
    let mut img = image::RgbImage::new(160, 120);
    let mut x: u32 = 12345;
    for p in img.pixels_mut() {
        x = x.wrapping_mul(1103515245).wrapping_add(12345);
        *p = image::Rgb([(x >> 24) as u8, (x >> 16) as u8, (x >> 8) as u8]);
    }
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    let cell = base64::engine::general_purpose::STANDARD.encode(&png);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "index\tqid\tquestion\tA\tB\tC\tD\tanswer\tcategory\timage\timage_source\timage_url").unwrap();
    for i in 0..rows {
        let cat = ["height_higher", "location_above", "orientation_viewpoint", "multi_object_facing"][i % 4];
        writeln!(
            f,
            "{i}\tq{}-{}\tIs it higher?\tyes\tno\t\t\t{}\t{cat}\t{cell}\tCOCO\thttp://x/{i}.jpg",
            i / 2,
            i % 2,
            ["A", "B"][i % 2]
        )
        .unwrap();
    }
    f.flush().unwrap();
    std::fs::metadata(path).unwrap().len()
}

fn peak_mib(stdout: &str) -> f64 {
    let line = stdout.lines().find(|l| l.starts_with("peak memory:")).unwrap_or_else(|| panic!("{stdout}"));
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[test]
fn a_large_tsv_is_read_in_memory_that_does_not_grow_with_the_file() {
    let dir = std::env::temp_dir().join(format!("actial-eval-large-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (small, large) = (dir.join("small.tsv"), dir.join("large.tsv"));
    let small_bytes = large_tsv(&small, 100);
    let large_bytes = large_tsv(&large, 1300);
    assert!(large_bytes > 90 << 20, "{large_bytes}");
    let run = |f: &Path| {
        let (ok, out, err) = eval(&["check", "--bench", &format!("3dsrbench={}", f.display())]);
        assert!(ok, "{err}");
        out
    };
    let (out_small, out_large) = (run(&small), run(&large));
    assert!(out_large.contains("1300 rows, 1300 items, 1300 images"), "{out_large}");
    assert!(out_large.contains("height_higher: 325"), "{out_large}");
    let (peak_small, peak_large) = (peak_mib(&out_small), peak_mib(&out_large));
    // Bound: the large file is 13x the small one (~100 MiB more); reading it
    // may cost at most 16 MiB more than reading the small one.
    let grew = peak_large - peak_small;
    assert!(
        grew < 16.0,
        "peak memory {peak_small:.0} MiB for {} MiB, {peak_large:.0} MiB for {} MiB",
        small_bytes >> 20,
        large_bytes >> 20
    );
    let _ = std::fs::remove_dir_all(&dir);
}
