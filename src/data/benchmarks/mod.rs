//! Readers for the spatial benchmarks the paper reports, in every layout they
//! are published in, and their published scoring rules.
//!
//! | benchmark | files read | category | published rule |
//! |---|---|---|---|
//! | `viewpoint` (Viewpoint-100K test) | ShareGPT json/jsonl (question type recovered from the text), parquet | question type | accuracy |
//! | `sat` (SAT test) | parquet (`image_bytes`, `question`, `answers`, `correct_answer`, `question_type`) | `question_type` | circular: asked once per rotation of the options, right only if always right |
//! | `cvbench` (CV-Bench) | `test_2d` / `test_3d` parquet or jsonl (`idx`, `type`, `task`, `image`/`filename`, `choices`, `answer` "(C)", `source`); VLMEvalKit `CV-Bench-2D.tsv` / `-3D.tsv` | `type/task` | ((ADE20K + COCO) / 2 + Omni3D) / 2 |
//! | `blink` (BLINK) | one parquet per subtask (`<Subtask>/val-…parquet`: `idx`, `sub_task`, `image_1..4`, `choices`, `answer` "(A)" or "hidden"); VLMEvalKit TSV | `sub_task` | mean of the subtask accuracies |
//! | `3dsrbench` (3DSRBench) | VLMEvalKit circular TSV (`index`, `qid`, `question`, `A..D`, `answer`, `category`, `image`) | subtype (12), type (4) | circular by `qid` without its `-k` suffix; `-flip` questions count alone |
//! | `mmsi` (MMSI-Bench) | `MMSI_bench.tsv` (`image` a JSON list of base64, options inside `question`), parquet (`images`), VLMEvalKit `MMSIBench_circular.tsv` / `_wo_circular.tsv` | `category` / `question_type` | accuracy (circular on the circular file) |
//!
//! Every benchmark also reads VLMEvalKit's TSV of it: `image` base64, a list of
//! them, or the `index` of the row that holds them (its circular files: copy k
//! at `index + k·1e6`, grouped by `g_index`).
//!
//! Files are streams ([`BenchReader`]): rows are read one at a time and images
//! kept compressed until a batch is decoded, so memory does not grow with the
//! file. A benchmark may span several files (`NAME=F1,F2` or a directory).
//! Errors name the file, the row (its line in text files, its 0-based index in
//! parquet) and the column.

mod layouts;
mod rows;
mod scoring;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use serde_json::json;

pub use layouts::{threedsr_question, threedsr_type, viewpoint_kind};
pub use rows::RowAt;
pub use scoring::{BenchScore, Scored, Scoring, score};

use super::formats::LoadReport;
use super::qa::QaRecord;
use crate::error::{Error, Result};

/// The benchmarks `actial-eval` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Benchmark {
    #[serde(rename = "viewpoint")]
    Viewpoint,
    #[serde(rename = "sat")]
    Sat,
    #[serde(rename = "cvbench")]
    CvBench,
    #[serde(rename = "blink")]
    Blink,
    #[serde(rename = "3dsrbench")]
    ThreeDsr,
    #[serde(rename = "mmsi")]
    Mmsi,
}

pub const ALL: [Benchmark; 6] =
    [Benchmark::Viewpoint, Benchmark::Sat, Benchmark::CvBench, Benchmark::Blink, Benchmark::ThreeDsr, Benchmark::Mmsi];

impl Benchmark {
    pub fn name(self) -> &'static str {
        match self {
            Benchmark::Viewpoint => "viewpoint",
            Benchmark::Sat => "sat",
            Benchmark::CvBench => "cvbench",
            Benchmark::Blink => "blink",
            Benchmark::ThreeDsr => "3dsrbench",
            Benchmark::Mmsi => "mmsi",
        }
    }
}

impl std::str::FromStr for Benchmark {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let k = s.to_ascii_lowercase().replace(['-', '_'], "");
        ALL.into_iter()
            .find(|b| b.name().replace('-', "") == k)
            .ok_or_else(|| format!("unknown benchmark {s:?}: one of {}", ALL.map(|b| b.name()).join(", ")))
    }
}

/// BLINK's subtasks the paper reports (others are read too; `--categories`
/// selects).
pub const BLINK_SPATIAL: [&str; 3] = ["Multi-view_Reasoning", "Relative_Depth", "Spatial_Relation"];

/// How a question and its options are put to the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum PromptStyle {
    /// The Actial release's training prompt: `question A: opt B: opt` and
    /// "Select the correct option, please output only the option letter!".
    Letter,
    /// The Actial release's evaluation (VLMEvalKit `actial_r1`): VLMEvalKit's
    /// multiple-choice prompt (`Question: …\nOptions:\nA. …`), with the Actial
    /// system prompt and the answer from `<answer>`, else after `</think>`.
    Actial,
}

/// How a benchmark is read.
#[derive(Clone, Copy, Debug)]
pub struct ReadOptions {
    /// Stop at the first unreadable row (naming it) instead of counting it.
    pub strict: bool,
    pub style: PromptStyle,
    pub scoring: Scoring,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions { strict: true, style: PromptStyle::Letter, scoring: Scoring::Published }
    }
}

/// Parses `--bench` specs: `NAME=FILE`, `NAME=F1,F2,…` or `NAME=DIR` (every
/// .tsv/.parquet/.jsonl/.json below it, in path order). A name given twice is
/// an error, not a merge.
pub fn parse_bench_specs(specs: &[String]) -> Result<Vec<(Benchmark, Vec<PathBuf>)>> {
    let err = |msg: String| Error::Arg { op: "benchmark", msg };
    let mut out: Vec<(Benchmark, Vec<PathBuf>)> = Vec::new();
    for spec in specs {
        let (name, files) = spec.split_once('=').ok_or_else(|| err(format!("--bench {spec:?}: expected NAME=FILE")))?;
        let b: Benchmark = name.parse().map_err(err)?;
        if out.iter().any(|(o, _)| *o == b) {
            return Err(err(format!(
                "--bench {}: given twice; list every file of a benchmark in one --bench {}=F1,F2 (or a directory)",
                b.name(),
                b.name()
            )));
        }
        let mut paths = Vec::new();
        for f in files.split(',').filter(|f| !f.is_empty()) {
            let p = PathBuf::from(f);
            if p.is_dir() {
                let before = paths.len();
                collect_files(&p, &mut paths)?;
                if paths.len() == before {
                    return Err(err(format!(
                        "{}: no .tsv, .parquet, .jsonl or .json file in this directory",
                        p.display()
                    )));
                }
            } else if p.is_file() {
                paths.push(p);
            } else {
                return Err(err(format!("{}: no such file or directory", p.display())));
            }
        }
        if paths.is_empty() {
            return Err(err(format!("--bench {spec:?}: no file")));
        }
        out.push((b, paths));
    }
    Ok(out)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let io = |e| Error::Io { path: dir.display().to_string(), source: e };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::result::Result<_, _>>()
        .map_err(io)?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect_files(&p, out)?;
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("tsv" | "parquet" | "jsonl" | "json")) {
            out.push(p);
        }
    }
    Ok(())
}

/// What reading a row gave.
#[derive(Debug)]
pub enum Item {
    Record(Box<QaRecord>),
    /// An unreadable row (only when not strict): the reason's kind, and the
    /// whole message naming the file, row and column.
    Skipped {
        reason: String,
        case: String,
    },
    /// A row with no published answer.
    Unscorable {
        reason: String,
    },
}

/// The reason without its details: "column image: undecodable base64 image:
/// Invalid byte 45" counts as "column image: undecodable base64 image".
fn reason_kind(reason: &str) -> String {
    let keep = if reason.starts_with("column ") { 2 } else { 1 };
    reason.splitn(keep + 1, ": ").take(keep).collect::<Vec<_>>().join(": ")
}

/// A benchmark's files as a stream of records.
pub struct BenchReader {
    bench: Benchmark,
    opts: ReadOptions,
    files: VecDeque<(PathBuf, rows::Rows)>,
    pending: VecDeque<QaRecord>,
    total: usize,
    done: usize,
}

impl BenchReader {
    /// Opens every file (a TSV is scanned once here for its image rows).
    pub fn open(bench: Benchmark, files: &[PathBuf], opts: ReadOptions) -> Result<BenchReader> {
        let mut open = VecDeque::new();
        let mut total = 0;
        for f in files {
            let r = rows::Rows::open(f)?;
            total += r.total();
            open.push_back((f.clone(), r));
        }
        Ok(BenchReader { bench, opts, files: open, pending: VecDeque::new(), total, done: 0 })
    }

    /// Rows in all files, and rows read so far.
    pub fn progress(&self) -> (usize, usize) {
        (self.done, self.total)
    }
}

impl Iterator for BenchReader {
    type Item = Result<Item>;

    fn next(&mut self) -> Option<Result<Item>> {
        loop {
            if let Some(r) = self.pending.pop_front() {
                return Some(Ok(Item::Record(Box::new(r))));
            }
            let (path, rows) = self.files.front_mut()?;
            let raw = match rows.next_row() {
                None => {
                    self.files.pop_front();
                    continue;
                }
                Some(Err(e)) => return Some(Err(e)),
                Some(Ok(raw)) => raw,
            };
            self.done += 1;
            let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
            let ctx = layouts::Ctx {
                bench: self.bench,
                file: path,
                base: &base,
                circular: rows.circular(),
                style: self.opts.style,
                rotate_options: self.bench == Benchmark::Sat && self.opts.scoring == Scoring::Published,
            };
            let index = match raw.at {
                RowAt::Line(n) | RowAt::Row(n) => n,
            };
            let parsed = raw.value.map_err(layouts::Fail::Bad).and_then(|v| layouts::row_records(&v, index, &ctx));
            let parsed = parsed.and_then(|recs| {
                for r in &recs {
                    if let Some(p) = r.images.iter().find_map(|i| match i {
                        super::qa::ImageRef::Path(p) if !p.is_file() => Some(p),
                        _ => None,
                    }) {
                        return Err(layouts::Fail::Bad(format!("missing image file {}", p.display())));
                    }
                }
                Ok(recs)
            });
            match parsed {
                Ok(recs) => {
                    for mut r in recs {
                        if !r.meta.is_object() {
                            r.meta = json!({});
                        }
                        r.meta["benchmark"] = json!(self.bench.name());
                        self.pending.push_back(r);
                    }
                }
                Err(layouts::Fail::Unscorable(reason)) => return Some(Ok(Item::Unscorable { reason })),
                Err(layouts::Fail::Bad(reason)) => {
                    let case = format!("{} ({}): {}: {reason}", path.display(), self.bench.name(), raw.at);
                    if self.opts.strict {
                        return Some(Err(Error::Arg { op: "benchmark", msg: case }));
                    }
                    return Some(Ok(Item::Skipped { reason: reason_kind(&reason), case }));
                }
            }
        }
    }
}

/// Reads every record of benchmark `b` from `path` into memory (small files,
/// tests; `actial-eval` streams with [`BenchReader`]). `strict`: the first bad
/// row is an error naming the file and row; otherwise bad rows are skipped and
/// counted by reason.
pub fn load_benchmark(b: Benchmark, path: &Path, strict: bool) -> Result<LoadReport> {
    load_benchmark_files(b, &[path.to_path_buf()], ReadOptions { strict, ..Default::default() })
}

/// [`load_benchmark`] over several files with explicit options.
pub fn load_benchmark_files(b: Benchmark, files: &[PathBuf], opts: ReadOptions) -> Result<LoadReport> {
    let mut report = LoadReport::default();
    for item in BenchReader::open(b, files, opts)? {
        match item? {
            Item::Record(r) => report.records.push(*r),
            Item::Skipped { reason, case } => {
                if report.examples.len() < 5 {
                    report.examples.push(case);
                }
                *report.skipped.entry(reason).or_default() += 1;
            }
            Item::Unscorable { reason } => *report.unscorable.entry(reason).or_default() += 1,
        }
    }
    Ok(report)
}
