//! Spatial benchmarks in their published formats, per-category reports, and
//! checkpoints side by side.
//!
//!   actial-eval run --model DIR --bench cvbench=test_2d.parquet,test_3d.parquet \
//!       --bench blink=BLINK/ --out runs/eval/sft [--prompt-style letter|actial] \
//!       [--scoring published|plain] [--system auto|actial|qwen|TEXT] [--batch 8]
//!   actial-eval check --bench 3dsrbench=3dsrbench_v1_vlmevalkit_circular.tsv
//!   actial-eval compare runs/eval/base runs/eval/sft runs/eval/grpo
//!
//! `run` reads each benchmark as a stream, a batch of rows at a time (images are
//! decoded per batch, so memory does not grow with the file), and writes
//! `<name>.items.jsonl` (one line per item: response, extracted answer and the
//! rule that found it, correctness) as items finish, so an interrupted run
//! resumes without redoing them; then `report.json` and `report.md` (headline by
//! the benchmark's published rule, per-category accuracy). `check` reads every
//! row and image without a model: what a run would skip, before spending hours.
//! Benchmark readers and scoring rules: `actial::data::benchmarks`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use actial::data::benchmarks::{
    BenchReader, BenchScore, Benchmark, Item, PromptStyle, ReadOptions, Scored, Scoring, parse_bench_specs, score,
};
use actial::data::qa::{ACTIAL_SYSTEM, QaRecord};
use actial::model::Qwen25Vl;
use actial::model::image::{ImageProcessorConfig, ResizeBackend};
use actial::model::tiny::{tiny_config, tiny_tokenizer};
use actial::model::tokenizer::QwenTokenizer;
use actial::train::eval::{AnswerExtractor, ItemResult, encode_prompts, evaluate_with};
use actial::util::io_err;
use actial::{Error, Result};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(version, about = "Spatial benchmarks: per-category reports and checkpoints side by side")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Evaluate one model on benchmarks (greedy decoding).
    Run(RunArgs),
    /// Read every row and image of benchmarks without a model: counts per
    /// category, what would be skipped and why, peak memory.
    Check(CheckArgs),
    /// Print the reports of several runs side by side, with deltas to the first.
    Compare {
        /// Run directories written by `actial-eval run`.
        #[arg(required = true, num_args = 1..)]
        runs: Vec<PathBuf>,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Model directory (HF layout, or an actial checkpoint / final/ directory),
    /// `tiny` for assets/tiny-base, or `tiny-random` (random weights: plumbing
    /// checks only).
    #[arg(long)]
    model: String,
    /// A PEFT LoRA adapter applied on top of the model.
    #[arg(long)]
    adapter: Option<PathBuf>,
    #[command(flatten)]
    read: ReadArgs,
    /// Output directory (resumed when it holds a run of the same settings).
    #[arg(long)]
    out: PathBuf,
    /// System prompt: `auto` (Actial's for checkpoints this project trained, the
    /// chat template's default otherwise), `actial`, `qwen` (template default), or
    /// the text itself (may start with "-").
    #[arg(long, default_value = "auto", allow_hyphen_values = true)]
    system: String,
    /// Prompts decoded together.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 16384)]
    max_prompt_tokens: usize,
    /// Keep only these categories (comma-separated), e.g. BLINK's
    /// Multi-view_Reasoning,Relative_Depth,Spatial_Relation.
    #[arg(long, value_delimiter = ',')]
    categories: Vec<String>,
    /// Evaluate at most this many items per benchmark (quick looks).
    #[arg(long)]
    limit: Option<usize>,
    /// Skip rows that cannot be read (counted in the report) instead of stopping
    /// at the first one.
    #[arg(long)]
    skip_bad: bool,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// How benchmarks are read (shared by `run` and `check`).
#[derive(clap::Args, Debug)]
struct ReadArgs {
    /// NAME=FILE, NAME=F1,F2 or NAME=DIR (one per benchmark, repeatable). Names:
    /// viewpoint, sat, cvbench, blink, 3dsrbench, mmsi.
    #[arg(long = "bench", required = true)]
    benches: Vec<String>,
    /// `letter`: the release's training prompt (`question A: … B: …` and the
    /// letter-only instruction), answers read as a bare letter or the first
    /// letter. `actial`: the release's evaluation (VLMEvalKit prompt, Actial
    /// system prompt, answer from <answer>, else after </think>).
    #[arg(long, value_enum, default_value = "letter")]
    prompt_style: PromptStyle,
    /// `published`: each benchmark's own rule (BLINK subtask mean, 3DSRBench and
    /// SAT circular, CV-Bench 2D/3D average); `plain`: accuracy over items.
    #[arg(long, value_enum, default_value = "published")]
    scoring: Scoring,
    /// Whose resize to reproduce: `torchvision` (transformers 5's default
    /// processor when torchvision is installed) or `pil`.
    #[arg(long, value_enum, default_value = "torchvision")]
    image_processor: ResizeBackend,
    /// Pixel budget per image (the paper evaluates at most 960x540).
    #[arg(long, default_value_t = 960 * 540)]
    max_pixels: usize,
}

#[derive(clap::Args, Debug)]
struct CheckArgs {
    #[command(flatten)]
    read: ReadArgs,
}

/// The model, its tokenizer and image processor, and whether this project
/// trained it (an actial checkpoint or final/ directory).
fn load_model(a: &RunArgs) -> Result<(Qwen25Vl, QwenTokenizer, ImageProcessorConfig, bool)> {
    let loaded = actial::model::load::load_model(&a.model, 0)?;
    let trained_here = loaded.trained_here(a.adapter.as_deref());
    // The paper evaluates greedily; a checkpoint's sampling settings are named,
    // not used, so scores stay comparable across checkpoints.
    match &loaded.dir {
        Some(dir) => match actial::model::generate::Decoding::from_generation_config(dir)? {
            Some(d) if d != actial::model::generate::Decoding::GREEDY => eprintln!(
                "decoding: greedy, as the paper evaluates ({} asks for {}: not used)",
                dir.join("generation_config.json").display(),
                d.describe()
            ),
            _ => eprintln!("decoding: greedy, as the paper evaluates"),
        },
        None => eprintln!("decoding: greedy, as the paper evaluates"),
    }
    let (mut model, tok, mut proc) = (loaded.model, loaded.tokenizer, loaded.processor);
    if let Some(ad) = &a.adapter {
        let n = model.load_peft_adapter(ad)?;
        eprintln!("applied {n} LoRA adapters from {}", ad.display());
    }
    let device = actial::Device::parse(&a.device)?;
    if let Some(w) = actial::cuda::unverified_warning(device) {
        eprintln!("{w}");
    }
    model.place_on(device)?;
    proc.max_pixels = a.read.max_pixels;
    proc.resize = a.read.image_processor;
    Ok((model, tok, proc, trained_here))
}

/// The items already finished in `path` (a truncated last line, from a killed
/// run, is dropped and redone).
fn finished(path: &Path) -> Result<Vec<Value>> {
    if !path.is_file() {
        return Ok(vec![]);
    }
    let f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line.map_err(io_err(path))?;
        match serde_json::from_str::<Value>(&line) {
            Ok(v) if v.get("id").is_some() => out.push(v),
            _ => break,
        }
    }
    // Rewrite without the broken tail so appends start on a clean line.
    let text: String = out.iter().map(|v| format!("{v}\n")).collect();
    actial::model::weights::write_atomic(path, text.as_bytes())?;
    Ok(out)
}

/// The answers already in `out` for benchmark `name` (its items.jsonl lines).
fn answered(out: &Path, name: &str) -> usize {
    std::fs::read_to_string(out.join(format!("{name}.items.jsonl"))).map_or(0, |t| t.lines().count())
}

/// Records the run's settings and each benchmark's files (path, size, sha256)
/// in `out/run.json`. Refuses other settings when answers exist, and a
/// benchmark whose files changed when it has answers, unless each file only
/// grew (the first run read a download that was cut short: its rows are still
/// the same). A directory without answers (a run that failed before its first)
/// takes the new settings.
fn claim_eval_dir(out: &Path, settings: &Value, benches: &[(Benchmark, Vec<PathBuf>)]) -> Result<()> {
    let path = out.join("run.json");
    let old: Value = match std::fs::read_to_string(&path) {
        Ok(t) => serde_json::from_str(&t)
            .map_err(|e| Error::Config { file: path.display().to_string(), msg: format!("not a run record: {e}") })?,
        Err(_) => Value::Null,
    };
    let old_settings = &old["settings"];
    let mut recorded = old.get("benchmarks").and_then(Value::as_object).cloned().unwrap_or_default();
    let any_answers = std::fs::read_dir(out).into_iter().flatten().flatten().any(|e| {
        e.file_name().to_str().and_then(|n| n.strip_suffix(".items.jsonl")).is_some_and(|n| answered(out, n) > 0)
    });
    if any_answers && !old.is_null() && old_settings != settings {
        return Err(actial::arg_err!(
            "actial-eval",
            "{} holds answers made with other settings ({old_settings}); use another --out",
            out.display()
        ));
    }
    for (b, files) in benches {
        let n = answered(out, b.name());
        let prev: Vec<Value> = recorded.get(b.name()).and_then(Value::as_array).cloned().unwrap_or_default();
        let mut now = Vec::new();
        for (i, file) in files.iter().enumerate() {
            let sha = actial::train::run_dir::hash_file(file)?;
            let bytes = std::fs::metadata(file).map_err(io_err(file))?.len();
            if n > 0 {
                let same = prev.get(i).is_some_and(|p| {
                    let (psha, pbytes) = (p["sha256"].as_str().unwrap_or(""), p["bytes"].as_u64().unwrap_or(0));
                    psha == sha
                        || (pbytes > 0
                            && pbytes < bytes
                            && actial::train::run_dir::hash_file_prefix(file, pbytes).is_ok_and(|h| h == psha))
                });
                if !same || prev.len() != files.len() {
                    let was: Vec<String> = prev
                        .iter()
                        .map(|p| {
                            format!(
                                "{} (sha256 {})",
                                p["file"].as_str().unwrap_or("?"),
                                p["sha256"].as_str().unwrap_or("?")
                            )
                        })
                        .collect();
                    return Err(actial::arg_err!(
                        "actial-eval",
                        "{}: {} holds {n} answers to {}, and {} is another file or other contents; use another --out",
                        b.name(),
                        out.display(),
                        was.join(", "),
                        file.display()
                    ));
                }
                if prev[i]["sha256"].as_str() != Some(sha.as_str()) {
                    eprintln!("{}: {} grew since the last run (it was cut short): resuming", b.name(), file.display());
                }
            }
            now.push(json!({ "file": file, "bytes": bytes, "sha256": sha }));
        }
        recorded.insert(b.name().to_string(), Value::Array(now));
    }
    let record = json!({ "settings": settings, "benchmarks": recorded });
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    actial::model::weights::write_atomic(&path, serde_json::to_string_pretty(&record).expect("JSON").as_bytes())
}

/// Peak resident memory of this process (Linux `VmHWM`), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Rows skipped (by reason, with the first few cases) and rows with no answer.
#[derive(Default)]
struct Skipped {
    bad: BTreeMap<String, usize>,
    cases: Vec<String>,
    unscorable: BTreeMap<String, usize>,
}

impl Skipped {
    fn add(&mut self, item: &Item) {
        match item {
            Item::Skipped { reason, case } => {
                *self.bad.entry(reason.clone()).or_default() += 1;
                if self.cases.len() < 3 {
                    self.cases.push(case.clone());
                }
            }
            Item::Unscorable { reason } => *self.unscorable.entry(reason.clone()).or_default() += 1,
            Item::Record(_) => {}
        }
    }

    fn print(&self, name: &str) {
        for (reason, n) in &self.bad {
            eprintln!("{name}: {n} rows skipped: {reason}");
        }
        for c in &self.cases {
            eprintln!("  e.g. {c}");
        }
        for (reason, n) in &self.unscorable {
            eprintln!("{name}: {n} rows not scorable: {reason}");
        }
    }
}

/// `check`: every row read and every image decoded and preprocessed, as `run`
/// would, without a model.
fn check(a: CheckArgs) -> Result<()> {
    let tok = tiny_tokenizer()?;
    let mut proc = ImageProcessorConfig::for_vision(&tiny_config(&tok).vision);
    proc.max_pixels = a.read.max_pixels;
    proc.resize = a.read.image_processor;
    for (b, files) in parse_bench_specs(&a.read.benches)? {
        let opts = ReadOptions { strict: false, style: a.read.prompt_style, scoring: a.read.scoring };
        let mut reader = BenchReader::open(b, &files, opts)?;
        let pb = actial::util::progress_bar(b.name(), reader.progress().1 as u64, "rows");
        let (mut skipped, mut kinds) = (Skipped::default(), BTreeMap::<String, usize>::new());
        let mut undecodable = BTreeMap::<String, usize>::new();
        let mut images = 0usize;
        while let Some(item) = reader.next() {
            let item = item?;
            skipped.add(&item);
            if let Item::Record(r) = item {
                match actial::train::data::record_images(&r, &proc) {
                    Ok(px) => {
                        images += r.images.len();
                        drop(px);
                        *kinds.entry(r.kind.clone()).or_default() += 1;
                    }
                    Err((reason, case)) => {
                        *undecodable.entry(reason.to_string()).or_default() += 1;
                        if undecodable.len() == 1 && undecodable.values().sum::<usize>() == 1 {
                            eprintln!("{}: {case}", b.name());
                        }
                    }
                }
            }
            pb.set_position(reader.progress().0 as u64);
        }
        pb.finish_and_clear();
        let records: usize = kinds.values().sum();
        println!("{}: {} files, {} rows, {records} items, {images} images", b.name(), files.len(), reader.progress().1);
        for (k, n) in &kinds {
            println!("  {k}: {n}");
        }
        skipped.print(b.name());
        for (reason, n) in &undecodable {
            eprintln!("{}: {n} items whose images fail: {reason}", b.name());
        }
    }
    if let Some(mib) = peak_rss_mib() {
        println!("peak memory: {mib:.0} MiB");
    }
    Ok(())
}

fn run(a: RunArgs) -> Result<()> {
    let benches = parse_bench_specs(&a.read.benches)?;
    let (model, tok, proc, trained_here) = load_model(&a)?;
    let system: Option<String> = match a.system.as_str() {
        "auto" if trained_here || a.read.prompt_style == PromptStyle::Actial => Some(ACTIAL_SYSTEM.to_string()),
        "auto" | "qwen" => None,
        "actial" => Some(ACTIAL_SYSTEM.to_string()),
        text => Some(text.to_string()),
    };
    let extractor = match a.read.prompt_style {
        PromptStyle::Letter => AnswerExtractor::default(),
        PromptStyle::Actial => AnswerExtractor::actial(),
    };
    std::fs::create_dir_all(&a.out).map_err(io_err(&a.out))?;
    // A run directory holds one setting and, per benchmark, one set of files:
    // resuming with another would score one file's answers as another's.
    let settings = json!({
        "model": a.model,
        "adapter": a.adapter,
        "system": system,
        "max_new_tokens": a.max_new_tokens,
        "max_pixels": a.read.max_pixels,
        "image_processor": a.read.image_processor,
        "categories": a.categories,
        "prompt_style": a.read.prompt_style,
        "scoring": a.read.scoring,
    });
    claim_eval_dir(&a.out, &settings, &benches)?;

    let mut report = serde_json::Map::new();
    let mut md = format!(
        "# actial-eval: {}\n\nsystem prompt: {}; prompt style: {}; scoring: {}\n",
        a.model,
        if system.is_some() { "Actial" } else { "template default" },
        json!(a.read.prompt_style).as_str().unwrap_or("?"),
        json!(a.read.scoring).as_str().unwrap_or("?")
    );
    for (b, files) in &benches {
        let opts = ReadOptions { strict: !a.skip_bad, style: a.read.prompt_style, scoring: a.read.scoring };
        if opts.strict {
            // A bad row stops the run: find it before the first answer, not
            // hours into the file (rows and image headers only; cheap).
            for item in BenchReader::open(*b, files, opts)? {
                item?;
            }
        }
        let mut reader = BenchReader::open(*b, files, opts)?;
        let path = a.out.join(format!("{}.items.jsonl", b.name()));
        let mut done = finished(&path)?;
        let done_ids: BTreeSet<String> = done.iter().filter_map(|v| v["id"].as_str().map(String::from)).collect();
        if !done_ids.is_empty() {
            eprintln!("{}: resuming, {} items already done", b.name(), done_ids.len());
        }
        let pb = actial::util::progress_bar(b.name(), reader.progress().1 as u64, "rows");
        let mut out = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io_err(&path))?;
        let (mut skipped, mut too_long) = (Skipped::default(), BTreeMap::<String, usize>::new());
        // A file may repeat an id; resuming needs them unique.
        let mut seen = BTreeMap::<String, usize>::new();
        let (mut taken, mut records) = (0usize, 0usize);
        let limit = a.limit.unwrap_or(usize::MAX);
        loop {
            // The next batch of records still to answer.
            let mut batch: Vec<QaRecord> = Vec::new();
            while batch.len() < a.batch.max(1) && taken < limit {
                let Some(item) = reader.next() else { break };
                let item = item?;
                skipped.add(&item);
                let Item::Record(r) = item else { continue };
                let mut r = *r;
                if !a.categories.is_empty() && !a.categories.iter().any(|c| c == &r.kind) {
                    continue;
                }
                taken += 1;
                let n = seen.entry(r.id.clone()).or_default();
                *n += 1;
                if *n > 1 {
                    r.id = format!("{}#{}", r.id, n);
                }
                records += 1;
                if !done_ids.contains(&r.id) {
                    batch.push(r);
                }
            }
            pb.set_position(reader.progress().0 as u64);
            if batch.is_empty() {
                break;
            }
            let (items, long) = encode_prompts(&batch, &tok, &proc, system.as_deref(), a.max_prompt_tokens)?;
            for (reason, n) in long {
                *too_long.entry(reason).or_default() += n;
            }
            let meta: BTreeMap<&str, &Value> = batch.iter().map(|r| (r.id.as_str(), &r.meta)).collect();
            let r = evaluate_with(&model, &tok, &items, a.max_new_tokens, a.batch, &extractor, &mut |_| {})?;
            let mut text = String::new();
            for it in &r.items {
                let line = item_line(it, meta.get(it.id.as_str()).copied().unwrap_or(&Value::Null));
                text.push_str(&format!("{line}\n"));
                done.push(line);
            }
            out.write_all(text.as_bytes()).map_err(io_err(&path))?;
            out.flush().map_err(io_err(&path))?;
        }
        pb.finish_and_clear();
        skipped.print(b.name());
        for (reason, n) in &too_long {
            eprintln!("{}: {n} items skipped: {reason}", b.name());
        }
        if done.is_empty() && records > 0 {
            eprintln!("warning: {}: none of its {records} items could be evaluated", b.name());
        }
        let scored: Vec<Scored> = done
            .iter()
            .map(|v| Scored {
                kind: v["kind"].as_str().unwrap_or(""),
                meta: &v["meta"],
                correct: v["correct"].as_bool().unwrap_or(false),
            })
            .collect();
        let mut s = score(*b, &scored, a.read.scoring);
        s.unscorable = skipped.unscorable.values().sum();
        let mut rules = BTreeMap::<String, usize>::new();
        for v in &done {
            *rules.entry(v["rule"].as_str().unwrap_or("?").to_string()).or_default() += 1;
        }
        println!("{}: {:.1}% ({} questions, {} items; {})", b.name(), 100.0 * s.overall, s.questions, s.items, s.rule);
        md.push_str(&bench_markdown(b.name(), &s));
        let mut entry = serde_json::to_value(&s).expect("JSON");
        entry["files"] = json!(files);
        entry["skipped_rows"] = json!(skipped.bad);
        entry["unscorable_rows"] = json!(skipped.unscorable);
        entry["skipped_prompts"] = json!(too_long);
        entry["extraction"] = json!(rules);
        report.insert(b.name().to_string(), entry);
    }
    let report = json!({ "model": a.model, "adapter": a.adapter, "system": system, "benchmarks": report });
    actial::model::weights::write_atomic(
        &a.out.join("report.json"),
        serde_json::to_string_pretty(&report).expect("JSON").as_bytes(),
    )?;
    actial::model::weights::write_atomic(&a.out.join("report.md"), md.as_bytes())?;
    eprintln!("report in {}", a.out.join("report.md").display());
    Ok(())
}

fn item_line(it: &ItemResult, meta: &Value) -> Value {
    let mut v = serde_json::to_value(it).expect("JSON");
    v["meta"] = meta.clone();
    v
}

fn bench_markdown(name: &str, s: &BenchScore) -> String {
    let mut md = format!(
        "\n## {name}: {:.1}%\n\n{} ({} questions, {} items, plain item accuracy {:.1}%)\n",
        100.0 * s.overall,
        s.rule,
        s.questions,
        s.items,
        100.0 * s.item_accuracy
    );
    let table = |head: &str, rows: &BTreeMap<String, (f64, usize)>| {
        let mut t = format!("\n| {head} | accuracy | questions |\n|---|---|---|\n");
        for (k, (acc, n)) in rows {
            t.push_str(&format!("| {k} | {:.1}% | {n} |\n", 100.0 * acc));
        }
        t
    };
    if !s.breakdown.is_empty() {
        md.push_str(&table("type / source", &s.breakdown));
    }
    md.push_str(&table("category", &s.categories));
    if s.unscorable > 0 {
        md.push_str(&format!("\n{} rows have no published answer and were not scored.\n", s.unscorable));
    }
    md
}

/// `compare`: one row per benchmark headline and category, one column per run,
/// deltas against the first run.
fn compare(runs: &[PathBuf]) -> Result<()> {
    let mut reports = Vec::new();
    for r in runs {
        let path = if r.is_dir() { r.join("report.json") } else { r.clone() };
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| actial::arg_err!("actial-eval", "{}: not a report: {e}", path.display()))?;
        let b: BTreeMap<String, BenchScore> = serde_json::from_value(v["benchmarks"].clone())
            .map_err(|e| actial::arg_err!("actial-eval", "{}: not a report: {e}", path.display()))?;
        reports.push(b);
    }
    let names: Vec<String> = runs.iter().map(|r| r.display().to_string()).collect();
    let mut header = format!("| benchmark / category | {} |", names.join(" | "));
    let mut rule = "|---|".to_string() + &"---|".repeat(names.len());
    if names.len() > 1 {
        header.push_str(&names[1..].iter().map(|n| format!(" Δ {n} |")).collect::<String>());
        rule.push_str(&"---|".repeat(names.len() - 1));
    }
    println!("{header}\n{rule}");
    let benches: BTreeSet<&String> = reports.iter().flat_map(|r| r.keys()).collect();
    for b in benches {
        let row = |label: String, get: &dyn Fn(&BenchScore) -> Option<f64>| {
            let vals: Vec<Option<f64>> = reports.iter().map(|r| r.get(b).and_then(get)).collect();
            let cell = |v: &Option<f64>| v.map(|x| format!("{:.1}", 100.0 * x)).unwrap_or_else(|| "-".into());
            let mut line = format!("| {label} | {} |", vals.iter().map(cell).collect::<Vec<_>>().join(" | "));
            for v in &vals[1..] {
                line.push_str(&match (vals[0], v) {
                    (Some(a), Some(x)) => format!(" {:+.1} |", 100.0 * (x - a)),
                    _ => " - |".into(),
                });
            }
            println!("{line}");
        };
        row(format!("**{b}**"), &|s| Some(s.overall));
        let cats: BTreeSet<&String> = reports
            .iter()
            .filter_map(|r| r.get(b))
            .flat_map(|s| s.breakdown.keys().chain(s.categories.keys()))
            .collect();
        for c in cats {
            row(format!("{b} / {c}"), &|s| s.categories.get(c).or(s.breakdown.get(c)).map(|x| x.0));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    actial::util::keep_freed_memory();
    let args = Args::parse();
    let r = match args.cmd {
        Cmd::Run(a) => run(a),
        Cmd::Check(a) => check(a),
        Cmd::Compare { runs } => compare(&runs),
    };
    if let Some(table) = actial::ops::profile::report() {
        eprintln!("\n{table}");
    }
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
