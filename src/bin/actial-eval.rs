//! Spatial benchmarks in their published formats, per-category reports, and
//! checkpoints side by side.
//!
//!   actial-eval run --model DIR --bench cvbench=test.parquet --bench blink=val.parquet \
//!       --out runs/eval/sft [--system auto|actial|qwen|TEXT] [--batch 8] [--max-new-tokens 64]
//!   actial-eval compare runs/eval/base runs/eval/sft runs/eval/grpo
//!
//! `run` writes, per benchmark, `<name>.items.jsonl` (one line per item: response,
//! extracted answer and the rule that found it, correctness) as items finish, so an
//! interrupted run resumes without redoing them, then `report.json` and
//! `report.md` (headline score by the benchmark's rule, per-category accuracy).
//! Benchmark readers and scoring rules: `actial::data::benchmarks`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use actial::data::benchmarks::{BenchScore, Benchmark, Scored, load_benchmark, score};
use actial::data::qa::{ACTIAL_SYSTEM, QaRecord};
use actial::model::Qwen25Vl;
use actial::model::image::ImageProcessorConfig;
use actial::model::tiny::{tiny_base_dir, tiny_config, tiny_tokenizer};
use actial::model::tokenizer::QwenTokenizer;
use actial::train::eval::{EvalItem, ItemResult, encode_prompts, evaluate};
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
    /// NAME=FILE (repeatable). Names: viewpoint, sat, cvbench, blink, 3dsrbench, mmsi.
    #[arg(long = "bench", required = true)]
    benches: Vec<String>,
    /// Output directory (resumed when it holds a run of the same settings).
    #[arg(long)]
    out: PathBuf,
    /// System prompt: `auto` (Actial's for checkpoints this project trained, the
    /// chat template's default otherwise), `actial`, `qwen` (template default), or
    /// the text itself.
    #[arg(long, default_value = "auto")]
    system: String,
    /// Prompts decoded together.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 16384)]
    max_prompt_tokens: usize,
    /// Pixel budget per image (the paper evaluates at most 960x540).
    #[arg(long, default_value_t = 960 * 540)]
    max_pixels: usize,
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

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Io { path: path.display().to_string(), source: e }
}

/// The model, its tokenizer and image processor, and whether this project
/// trained it (an actial checkpoint or final/ directory).
fn load_model(a: &RunArgs) -> Result<(Qwen25Vl, QwenTokenizer, ImageProcessorConfig, bool)> {
    let dir = if a.model == "tiny" { tiny_base_dir() } else { PathBuf::from(&a.model) };
    let random = a.model == "tiny-random" || (a.model == "tiny" && !dir.join("config.json").is_file());
    let (mut model, tok, mut proc) = if random {
        if a.model == "tiny" {
            eprintln!("warning: {} is missing; using a random tiny model", dir.display());
        }
        let tok = tiny_tokenizer()?;
        let cfg = tiny_config(&tok);
        let proc = ImageProcessorConfig::for_vision(&cfg.vision);
        (Qwen25Vl::random(cfg, 0)?, tok, proc)
    } else {
        let model = Qwen25Vl::from_dir(&dir)?;
        let tok = QwenTokenizer::from_file(&dir.join("tokenizer.json"))?;
        tok.check_config(&model.config.tokens)?;
        let proc = ImageProcessorConfig::from_dir(&dir, &model.config.vision)?;
        (model, tok, proc)
    };
    if let Some(ad) = &a.adapter {
        let n = model.load_peft_adapter(ad)?;
        eprintln!("applied {n} LoRA adapters from {}", ad.display());
    }
    let device = actial::Device::parse(&a.device)?;
    if let Some(w) = actial::cuda::unverified_warning(device) {
        eprintln!("{w}");
    }
    model.place_on(device)?;
    proc.max_pixels = a.max_pixels;
    let trained_here = ["trainer_state.json", "actial_model.json"]
        .iter()
        .any(|f| dir.join(f).is_file() || a.adapter.as_ref().is_some_and(|ad| ad.join(f).is_file()));
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

/// Unique ids (a benchmark file may repeat one; resume needs them unique).
fn unique_ids(records: &mut [QaRecord]) {
    let mut seen = BTreeMap::<String, usize>::new();
    for r in records {
        let n = seen.entry(r.id.clone()).or_default();
        *n += 1;
        if *n > 1 {
            r.id = format!("{}#{}", r.id, n);
        }
    }
}

/// The answers already in `out` for benchmark `name` (its items.jsonl lines).
fn answered(out: &Path, name: &str) -> usize {
    std::fs::read_to_string(out.join(format!("{name}.items.jsonl"))).map_or(0, |t| t.lines().count())
}

/// Records the run's settings and each benchmark's file and hash in
/// `out/run.json`. Refuses other settings when answers exist, and a benchmark
/// whose file changed when it has answers; a directory without answers (a run
/// that failed before its first) takes the new settings.
fn claim_eval_dir(out: &Path, settings: &Value, benches: &[(Benchmark, PathBuf)]) -> Result<()> {
    let path = out.join("run.json");
    let old: Value = match std::fs::read_to_string(&path) {
        Ok(t) => serde_json::from_str(&t)
            .map_err(|e| Error::Config { file: path.display().to_string(), msg: format!("not a run record: {e}") })?,
        Err(_) => Value::Null,
    };
    // Records before benchmark hashes were the settings alone.
    let old_settings = if old.get("settings").is_some() { &old["settings"] } else { &old };
    let mut files = old.get("benchmarks").and_then(Value::as_object).cloned().unwrap_or_default();
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
    for (b, file) in benches {
        let sha = actial::train::run_dir::hash_input(file)?;
        let n = answered(out, b.name());
        if let Some(prev) = files.get(b.name())
            && n > 0
            && prev["sha256"].as_str() != Some(sha.as_str())
        {
            return Err(actial::arg_err!(
                "actial-eval",
                "{}: {} holds {n} answers to {} (sha256 {}), and {} is another file or other contents; use another --out",
                b.name(),
                out.display(),
                prev["file"].as_str().unwrap_or("?"),
                prev["sha256"].as_str().unwrap_or("?"),
                file.display()
            ));
        }
        files.insert(b.name().to_string(), json!({ "file": file, "sha256": sha }));
    }
    let record = json!({ "settings": settings, "benchmarks": files });
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    actial::model::weights::write_atomic(&path, serde_json::to_string_pretty(&record).expect("JSON").as_bytes())
}

fn run(a: RunArgs) -> Result<()> {
    let mut benches = Vec::new();
    for spec in &a.benches {
        let (name, file) = spec
            .split_once('=')
            .ok_or_else(|| actial::arg_err!("actial-eval", "--bench {spec:?}: expected NAME=FILE"))?;
        let b: Benchmark = name.parse().map_err(|e: String| actial::arg_err!("actial-eval", "{e}"))?;
        benches.push((b, PathBuf::from(file)));
    }
    let (model, tok, proc, trained_here) = load_model(&a)?;
    let system: Option<String> = match a.system.as_str() {
        "auto" if trained_here => Some(ACTIAL_SYSTEM.to_string()),
        "auto" | "qwen" => None,
        "actial" => Some(ACTIAL_SYSTEM.to_string()),
        text => Some(text.to_string()),
    };
    std::fs::create_dir_all(&a.out).map_err(io_err(&a.out))?;
    // A run directory holds one setting and, per benchmark, one file: resuming
    // with another would score one file's answers as another's.
    let settings = json!({
        "model": a.model,
        "adapter": a.adapter,
        "system": system,
        "max_new_tokens": a.max_new_tokens,
        "max_pixels": a.max_pixels,
        "categories": a.categories,
    });
    claim_eval_dir(&a.out, &settings, &benches)?;

    let mut report = serde_json::Map::new();
    let mut md = format!(
        "# actial-eval: {}\n\nsystem prompt: {}\n",
        a.model,
        if system.is_some() { "Actial" } else { "template default" }
    );
    for (b, file) in &benches {
        let loaded = load_benchmark(*b, file, !a.skip_bad)?;
        if loaded.skipped_total() > 0 {
            eprintln!("{}: {}", b.name(), loaded.summary());
        }
        let mut records: Vec<QaRecord> = loaded
            .records
            .into_iter()
            .filter(|r| a.categories.is_empty() || a.categories.iter().any(|c| c == &r.kind))
            .collect();
        if let Some(n) = a.limit {
            records.truncate(n);
        }
        unique_ids(&mut records);
        let meta: BTreeMap<String, Value> = records.iter().map(|r| (r.id.clone(), r.meta.clone())).collect();
        let (items, too_long) = encode_prompts(&records, &tok, &proc, system.as_deref(), a.max_prompt_tokens)?;
        for (reason, n) in &too_long {
            eprintln!("{}: {n} items skipped: {reason}", b.name());
        }
        if items.is_empty() && !records.is_empty() {
            eprintln!("warning: {}: none of its {} items could be evaluated", b.name(), records.len());
        }
        let path = a.out.join(format!("{}.items.jsonl", b.name()));
        let mut done = finished(&path)?;
        let done_ids: BTreeSet<String> = done.iter().filter_map(|v| v["id"].as_str().map(String::from)).collect();
        let todo: Vec<EvalItem> = items.into_iter().filter(|i| !done_ids.contains(&i.id)).collect();
        if !done_ids.is_empty() {
            eprintln!("{}: resuming, {} items already done, {} to go", b.name(), done_ids.len(), todo.len());
        }
        let pb = indicatif::ProgressBar::new(todo.len() as u64);
        pb.set_style(
            indicatif::ProgressStyle::with_template(&format!(
                "{} {{wide_bar}} {{pos}}/{{len}} [{{elapsed}} < {{eta}}]",
                b.name()
            ))
            .expect("valid template"),
        );
        let mut out = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io_err(&path))?;
        for chunk in todo.chunks(a.batch.max(1)) {
            let r = evaluate(&model, &tok, chunk, a.max_new_tokens, a.batch, &mut |_| {})?;
            let mut text = String::new();
            for it in &r.items {
                let line = item_line(it, meta.get(&it.id).unwrap_or(&Value::Null));
                text.push_str(&format!("{line}\n"));
                done.push(line);
            }
            out.write_all(text.as_bytes()).map_err(io_err(&path))?;
            out.flush().map_err(io_err(&path))?;
            pb.inc(chunk.len() as u64);
        }
        pb.finish_and_clear();
        let scored: Vec<Scored> = done
            .iter()
            .map(|v| Scored {
                kind: v["kind"].as_str().unwrap_or(""),
                meta: &v["meta"],
                correct: v["correct"].as_bool().unwrap_or(false),
            })
            .collect();
        let s = score(*b, &scored);
        let mut rules = BTreeMap::<String, usize>::new();
        for v in &done {
            *rules.entry(v["rule"].as_str().unwrap_or("?").to_string()).or_default() += 1;
        }
        println!("{}: {:.1}% ({} questions, {} items; {})", b.name(), 100.0 * s.overall, s.questions, s.items, s.rule);
        md.push_str(&bench_markdown(b.name(), &s));
        let mut entry = serde_json::to_value(&s).expect("JSON");
        entry["file"] = json!(file);
        entry["skipped_rows"] = json!(loaded.skipped);
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
        "\n## {name}: {:.1}%\n\n{} ({} questions, {} items, item accuracy {:.1}%)\n\n| category | accuracy | questions |\n|---|---|---|\n",
        100.0 * s.overall,
        s.rule,
        s.questions,
        s.items,
        100.0 * s.item_accuracy
    );
    for (k, (acc, n)) in &s.categories {
        md.push_str(&format!("| {k} | {:.1}% | {n} |\n", 100.0 * acc));
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
        let cats: BTreeSet<&String> =
            reports.iter().filter_map(|r| r.get(b)).flat_map(|s| s.categories.keys()).collect();
        for c in cats {
            row(format!("{b} / {c}"), &|s| s.categories.get(c).map(|x| x.0));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let r = match args.cmd {
        Cmd::Run(a) => run(a),
        Cmd::Compare { runs } => compare(&runs),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
