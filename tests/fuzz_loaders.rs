//! Bounded mutation fuzzing of every loader, run in CI: for each format, a
//! fixed number of deterministic mutants of a valid file (bit flips, bytes set
//! to edge values, truncations, duplicated or deleted spans, numbers swapped
//! for extremes). Each mutant must load or fail with an error: a panic fails
//! the test (naming the format, the mutant and the panic; the input is kept
//! under target/fuzz-failures/), an abort fails the test binary.
//! `ACTIAL_FUZZ_MUTANTS` raises the count (default 150 per format).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use actial::data::benchmarks::{Benchmark, load_benchmark};
use actial::data::colmap::{read_binary, read_text};
use actial::data::formats::{load_mcq, load_sharegpt};
use actial::data::parquet::load_parquet_qa;
use actial::model::image::decode_image;
use actial::model::tokenizer::QwenTokenizer;
use actial::model::{Checkpoint, Qwen25Vl, Qwen25VlConfig};
use actial::rng::Philox;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn mutants() -> usize {
    std::env::var("ACTIAL_FUZZ_MUTANTS").ok().and_then(|v| v.parse().ok()).unwrap_or(150)
}

/// One mutant of `seed`: 1 to 4 edits drawn from `rng`.
fn mutate(seed: &[u8], rng: &mut Philox) -> Vec<u8> {
    let mut b = seed.to_vec();
    let edits = 1 + rng.next_u32() as usize % 4;
    for _ in 0..edits {
        let pos = |rng: &mut Philox, len: usize| if len == 0 { 0 } else { rng.next_u32() as usize % len };
        match rng.next_u32() % 7 {
            0 if !b.is_empty() => {
                let i = pos(rng, b.len());
                b[i] ^= 1 << (rng.next_u32() % 8);
            }
            1 if !b.is_empty() => {
                let i = pos(rng, b.len());
                b[i] = [0u8, 0xff, 0x7f, 0x80, b'"', b'{', b'9', b'-', b'\n', b'\t'][rng.next_u32() as usize % 10];
            }
            2 => {
                let i = pos(rng, b.len());
                b.truncate(i);
            }
            3 if !b.is_empty() => {
                let (i, n) = (pos(rng, b.len()), 1 + rng.next_u32() as usize % 64);
                let span: Vec<u8> = b[i..(i + n).min(b.len())].to_vec();
                let at = pos(rng, b.len());
                b.splice(at..at, span);
            }
            4 if !b.is_empty() => {
                let (i, n) = (pos(rng, b.len()), 1 + rng.next_u32() as usize % 64);
                b.drain(i..(i + n).min(b.len()));
            }
            5 => {
                // A run of digits becomes an extreme number.
                let starts: Vec<usize> =
                    (0..b.len()).filter(|&i| b[i].is_ascii_digit() && (i == 0 || !b[i - 1].is_ascii_digit())).collect();
                if !starts.is_empty() {
                    let s = starts[pos(rng, starts.len())];
                    let e = (s..b.len()).find(|&i| !b[i].is_ascii_digit()).unwrap_or(b.len());
                    let x = ["0", "-1", "4294967295", "18446744073709551615", "99999999999999999999", "1e308", "NaN"]
                        [rng.next_u32() as usize % 7];
                    b.splice(s..e, x.bytes());
                }
            }
            _ => {
                // Little-endian integers: an 8-byte window set to a huge value.
                if b.len() >= 8 {
                    let i = pos(rng, b.len() - 7);
                    let v: u64 = [u64::MAX, 1 << 40, 1 << 31, 0][rng.next_u32() as usize % 4];
                    b[i..i + 8].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    b
}

/// Runs `load` on `mutants()` mutants of `seed`, written to `file` in a
/// scratch directory prepared by `setup`; returns the panics.
/// Copies a folder of files (and sub-folders).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.path().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            copy(&e.path(), &to.join(e.file_name()));
        }
    }
}

fn fuzz(
    format: &str,
    seed_path: &Path,
    file: &str,
    setup: &dyn Fn(&Path),
    load: &dyn Fn(&Path) -> actial::Result<()>,
) -> Vec<String> {
    let seed = std::fs::read(seed_path).unwrap_or_else(|e| panic!("{}: {e}", seed_path.display()));
    let dir = std::env::temp_dir().join(format!("actial-fuzz-{format}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    setup(&dir);
    // The seed itself must load: otherwise every mutant fails for nothing.
    std::fs::write(dir.join(file), &seed).unwrap();
    load(&dir).unwrap_or_else(|e| panic!("{format}: the seed does not load: {e}"));
    let mut rng = Philox::new(0xf022, format.len() as u64 * 7919 + seed.len() as u64);
    let (mut panics, mut errors) = (Vec::new(), 0);
    for i in 0..mutants() {
        let m = mutate(&seed, &mut rng);
        std::fs::write(dir.join(file), &m).unwrap();
        match catch_unwind(AssertUnwindSafe(|| load(&dir))) {
            Ok(Ok(())) => {}
            Ok(Err(_)) => errors += 1,
            Err(p) => {
                let msg = actial::error::panic_message(p.as_ref());
                let keep = root().join("target/fuzz-failures");
                std::fs::create_dir_all(&keep).unwrap();
                let saved = keep.join(format!("{format}-{i}-{file}"));
                std::fs::write(&saved, &m).unwrap();
                panics.push(format!("{format} mutant {i} ({}): panicked: {msg}", saved.display()));
            }
        }
    }
    println!("{format}: {} mutants, {errors} refused with an error, {} panics", mutants(), panics.len());
    let _ = std::fs::remove_dir_all(&dir);
    panics
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
}

#[test]
fn every_loader_survives_mutated_input() {
    // The default panic hook would print every caught panic; they are reported below.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let parity = root().join("tests/fixtures/parity/text_only");
    let bench = root().join("tests/fixtures/benchmarks");
    let colmap = root().join("tests/fixtures/colmap/orbit/sparse/0");
    let images = root().join("tests/fixtures/images");
    let none = |_: &Path| {};
    let with_parity_config = |d: &Path| copy(&parity.join("config.json"), &d.join("config.json"));
    let mut panics = Vec::new();

    panics.extend(fuzz(
        "safetensors",
        &parity.join("model.safetensors"),
        "model.safetensors",
        &with_parity_config,
        &|d| {
            let ck = Checkpoint::open(d)?;
            for n in ck.names().map(String::from).collect::<Vec<_>>() {
                ck.tensor(&n)?;
            }
            Qwen25Vl::from_dir(d).map(drop)
        },
    ));
    panics.extend(fuzz("config", &parity.join("config.json"), "config.json", &none, &|d| {
        let text = String::from_utf8_lossy(&std::fs::read(d.join("config.json")).unwrap()).into_owned();
        Qwen25VlConfig::from_json_str(&text, "config.json").map(drop)
    }));
    panics.extend(fuzz("tokenizer", &root().join("assets/tiny-base/tokenizer.json"), "tokenizer.json", &none, &|d| {
        let t = QwenTokenizer::from_file(&d.join("tokenizer.json"))?;
        t.encode("Which option? A: cube <image>").map(drop)
    }));
    let sharegpt = [
        r#"{"id": "a", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "<image>Which way? A: left B: right"}, {"role": "assistant", "content": "<think>t</think><answer>A</answer>"}], "images": ["a.png"], "meta": {"pair": 3}}"#,
        r#"{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "B"}], "answer": "B"}"#,
    ]
    .join("\n");
    let seed_dir = std::env::temp_dir().join(format!("actial-fuzz-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&seed_dir).unwrap();
    std::fs::write(seed_dir.join("sharegpt.jsonl"), &sharegpt).unwrap();
    let with_image = |d: &Path| copy(&images.join("a.png"), &d.join("a.png"));
    panics.extend(fuzz("sharegpt", &seed_dir.join("sharegpt.jsonl"), "data.jsonl", &with_image, &|d| {
        load_sharegpt(&d.join("data.jsonl"), false)?;
        load_sharegpt(&d.join("data.jsonl"), true).map(drop)
    }));
    let mcq = r#"{"id": 1, "question": "<image>Nearer?", "options": ["the cube", "the ball"], "answer": 1, "images": [{"path": "a.png"}], "kind": "sat"}"#;
    std::fs::write(seed_dir.join("mcq.jsonl"), format!("{mcq}\n{mcq}\n")).unwrap();
    panics.extend(fuzz("mcq", &seed_dir.join("mcq.jsonl"), "data.jsonl", &with_image, &|d| {
        load_mcq(&d.join("data.jsonl"), "Answer with the letter.", false).map(drop)
    }));
    for p in ["sat_verl.parquet", "sat_array.parquet"] {
        let seed = root().join("tests/fixtures/parquet").join(p);
        panics.extend(fuzz(p, &seed, "data.parquet", &none, &|d| {
            load_parquet_qa(&d.join("data.parquet"), "Answer with the letter.", false).map(drop)
        }));
    }
    // Copies a fixture's image folder next to the mutant (paths are relative).
    let with_images = |from: &'static str| {
        let bench = bench.clone();
        move |d: &Path| copy_tree(&bench.join(from), &d.join(Path::new(from).file_name().unwrap()))
    };
    let (cv_images, vp_images) = (with_images("cvbench/jsonl/img"), with_images("viewpoint/images"));
    for (b, f, name, setup) in [
        (
            Benchmark::ThreeDsr,
            "3dsrbench/3dsrbench_v1_vlmevalkit_circular.tsv",
            "3dsrbench.tsv",
            &none as &dyn Fn(&Path),
        ),
        (Benchmark::CvBench, "cvbench/jsonl/test_2d.jsonl", "test_2d.jsonl", &cv_images),
        (Benchmark::CvBench, "cvbench/parquet/test_2d.parquet", "test_2d.parquet", &none),
        (Benchmark::CvBench, "cvbench/vlmevalkit/CV-Bench-2D.tsv", "CV-Bench-2D.tsv", &none),
        (Benchmark::Blink, "blink/Multi-view_Reasoning/val-00000-of-00001.parquet", "val.parquet", &none),
        (Benchmark::Mmsi, "mmsi/test.parquet", "mmsi.parquet", &none),
        (Benchmark::Mmsi, "mmsi/MMSI_bench.tsv", "MMSI_bench.tsv", &none),
        (Benchmark::Mmsi, "mmsi/MMSIBench_circular.tsv", "MMSIBench_circular.tsv", &none),
        (Benchmark::Sat, "sat/test.parquet", "sat.parquet", &none),
        (Benchmark::Viewpoint, "viewpoint/test.json", "viewpoint.json", &vp_images),
    ] {
        panics.extend(fuzz(name, &bench.join(f), name, setup, &|d| load_benchmark(b, &d.join(name), false).map(drop)));
    }
    for (f, other, read) in [
        ("cameras.txt", "images.txt", read_text as fn(&Path) -> actial::Result<_>),
        ("images.txt", "cameras.txt", read_text),
        ("cameras.bin", "images.bin", read_binary),
        ("images.bin", "cameras.bin", read_binary),
    ] {
        let partner = colmap.join(other);
        panics.extend(fuzz(f, &colmap.join(f), f, &|d| copy(&partner, &d.join(other)), &|d| read(d).map(drop)));
    }
    for f in ["a.png", "b.jpg"] {
        panics.extend(fuzz(f, &images.join(f), f, &none, &|d| {
            decode_image(&std::fs::read(d.join(f)).unwrap(), f).map(drop)
        }));
    }
    std::panic::set_hook(hook);
    let _ = std::fs::remove_dir_all(&seed_dir);
    assert!(panics.is_empty(), "{} panics:\n{}", panics.len(), panics.join("\n"));
}
