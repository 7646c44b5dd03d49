//! Viewpoint data: synthesise, inspect, count and mix.
//!
//!   actial-data synth   --out DIR [--pairs N] [--seed S] [--size PX]
//!   actial-data build   --captures ROOT --out DIR [--max-pairs-per-capture 20]
//!   actial-data stats   FILE.jsonl
//!   actial-data inspect FILE.jsonl --out SHEET.png [--n 12] [--start 0]
//!   actial-data mix     --letters FILE.jsonl --out MIX.jsonl [--cot-fraction 0.1]
//!                       [--cot-unique 1000] [--import-cots COTS.jsonl]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use actial::Result;
use actial::data::formats::{load_any, write_sharegpt};
use actial::data::mix::{CotStyle, MixConfig, mix};
use actial::data::qa::{ImageRef, QaRecord};
use actial::data::render::SceneStyle;
use actial::data::sheet::contact_sheet;
use actial::data::synth::{SynthConfig, render_pairs};
use actial::util::io_err;
use clap::{Parser, Subcommand};

// mimalloc reuses freed buffers instead of returning them to the OS: the CPU path
// allocates every activation, and glibc's fresh mmaps cost page faults per step
// (~30% of a tiny-model training step; docs/ARCHITECTURE.md, "Memory").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "Viewpoint data for the Actial recipe")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Render synthetic viewpoint pairs: images, viewpoint.jsonl (3 questions per
    /// pair), sat.jsonl (SAT-like questions), manifest.jsonl (ground truth).
    Synth {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 1000)]
        pairs: u64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 112)]
        size: u32,
        /// Supersampling per axis (anti-aliasing).
        #[arg(long, default_value_t = 2)]
        supersample: u32,
        /// What the photos show: `parts` (multi-part objects), `cube` (one cube
        /// with faces coloured anew per scene) or `known-cube` (the same colours
        /// on the same faces in every scene, the tiny preset's scenes).
        #[arg(long, default_value = "parts")]
        scene: SceneStyle,
    },
    /// Viewpoint QA from real captures (COLMAP / MVImgNet layout): every directory
    /// under ROOT with sparse/0 (or sparse) and images/ is one object.
    Build {
        #[arg(long)]
        captures: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 20)]
        max_pairs_per_capture: usize,
        #[arg(long, default_value_t = 20.0)]
        min_yaw: f64,
        #[arg(long, default_value_t = 100.0)]
        max_yaw: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Counts by kind and answer, image checks, prompt lengths (jsonl, json or parquet).
    Stats { file: PathBuf },
    /// A contact-sheet PNG of items (images, question, answer) to check labels by eye.
    Inspect {
        file: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 12)]
        n: usize,
        #[arg(long, default_value_t = 0)]
        start: usize,
    },
    /// The hybrid cold-start mix: letter items + pseudo-CoT items, Actial system prompt.
    Mix {
        #[arg(long)]
        letters: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0.1)]
        cot_fraction: f64,
        #[arg(long, default_value_t = 1000)]
        cot_unique: usize,
        /// jsonl of {"id", "response"} CoTs written elsewhere, used instead of templates.
        #[arg(long)]
        import_cots: Option<PathBuf>,
        #[arg(long)]
        system: Option<String>,
        /// CoT items end with this instead of the letter-only instruction
        /// (default: the letter items' prompt).
        #[arg(long)]
        cot_instruction: Option<String>,
        /// Pseudo-CoT length: `full` (the paper's five steps) or `short` (two
        /// sentences, for small models).
        #[arg(long, default_value = "full")]
        cot_style: CotStyle,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

fn synth(out: &Path, pairs: u64, seed: u64, size: u32, supersample: u32, scene: SceneStyle) -> Result<()> {
    let cfg = SynthConfig { size, supersample, scene, ..SynthConfig::default() };
    let pb = actial::util::progress_bar("rendering pairs", pairs, "");
    let t0 = Instant::now();
    let rows = render_pairs(&out.join("images"), pairs, seed, &cfg, &|| pb.inc(1))?;
    pb.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    let (mut vp, mut sat, mut manifest) = (Vec::new(), Vec::new(), String::new());
    for (v, s, m) in rows {
        vp.extend(v);
        sat.extend(s);
        manifest.push_str(&m.to_string());
        manifest.push('\n');
    }
    write_sharegpt(&out.join("viewpoint.jsonl"), &vp)?;
    write_sharegpt(&out.join("sat.jsonl"), &sat)?;
    actial::model::weights::write_atomic(&out.join("manifest.jsonl"), manifest.as_bytes())?;
    eprintln!(
        "{pairs} pairs in {secs:.1} s ({:.0} pairs/s incl. PNG writes): {} viewpoint items, {} SAT-like items -> {}",
        pairs as f64 / secs,
        vp.len(),
        sat.len(),
        out.display()
    );
    Ok(())
}

fn build(root: &Path, out: &Path, max_pairs: usize, min_yaw: f64, max_yaw: f64, seed: u64) -> Result<()> {
    use actial::data::colmap::{choose_pairs, find_captures, read_model};
    use actial::data::geometry::PairFilter;
    use actial::data::qa::LETTER_INSTRUCTION;
    use actial::data::viewpoint::viewpoint_questions;
    let captures = find_captures(root)?;
    if captures.is_empty() {
        return Err(actial::arg_err!("build", "no captures (sparse/0 + images/) under {}", root.display()));
    }
    let filter = PairFilter { min_yaw_deg: min_yaw, max_yaw_deg: max_yaw, ..PairFilter::default() };
    let pb = actial::util::progress_bar("reading captures", captures.len() as u64, "");
    let (mut records, mut manifest) = (Vec::new(), String::new());
    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    let mut examples = Vec::new();
    for (ci, cap) in captures.iter().enumerate() {
        pb.inc(1);
        let model = match read_model(&cap.model_dir) {
            Ok(m) => m,
            Err(e) => {
                *skipped.entry("capture: unreadable COLMAP model".into()).or_default() += 1;
                if examples.len() < 5 {
                    examples.push(e.to_string());
                }
                continue;
            }
        };
        let sel = choose_pairs(&model, &filter, max_pairs, seed ^ ci as u64);
        for (r, n) in &sel.rejected {
            *skipped.entry(format!("pair: {}", r.reason())).or_default() += n;
        }
        let mut rng = actial::rng::Philox::new(seed, 0xb11d ^ ((ci as u64) << 20));
        for (i, j, truth) in sel.pairs {
            let paths = [cap.images_dir.join(&model.images[i].name), cap.images_dir.join(&model.images[j].name)];
            if let Some(p) = paths.iter().find(|p| !p.is_file()) {
                *skipped.entry("pair: image file missing".into()).or_default() += 1;
                if examples.len() < 5 {
                    examples.push(format!("missing {}", p.display()));
                }
                continue;
            }
            let id = format!(
                "{}_{}_{}",
                cap.root.strip_prefix(root).unwrap_or(&cap.root).display().to_string().replace('/', "_"),
                i,
                j
            );
            let meta = serde_json::json!({
                "capture": cap.root.display().to_string(),
                "yaw_deg": truth.yaw_deg,
                "camera_translation": truth.camera_translation.word(),
                "object_translation": truth.object_translation.word(),
                "camera_rotation": truth.camera_rotation.word(),
            });
            for q in viewpoint_questions(&truth, actial::data::qa::OptionOrder::Shuffled, &mut rng) {
                records.push(QaRecord {
                    id: format!("{id}_{}", q.kind),
                    kind: q.kind.clone(),
                    system: None,
                    prompt: format!("<image><image>{}", q.prompt(LETTER_INSTRUCTION)),
                    images: paths.iter().cloned().map(ImageRef::Path).collect(),
                    response: q.letter().to_string(),
                    answer: q.letter().to_string(),
                    meta: meta.clone(),
                });
            }
            let row = serde_json::json!({"id": id, "images": paths, "yaw_deg": truth.yaw_deg,
                "translation_cam1": truth.translation, "axis_tilt_deg": truth.axis_tilt_deg, "answers": meta});
            manifest.push_str(&row.to_string());
            manifest.push('\n');
        }
    }
    pb.finish_and_clear();
    if records.is_empty() {
        // Nothing usable: an empty viewpoint.jsonl would look like success.
        let why: Vec<String> = skipped.iter().map(|(r, n)| format!("{n} skipped: {r}")).collect();
        return Err(actial::arg_err!(
            "build",
            "no viewpoint pair from the {} capture(s) under {}:\n  {}\n  e.g. {}",
            captures.len(),
            root.display(),
            why.join("\n  "),
            examples.join("\n  e.g. ")
        ));
    }
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    write_sharegpt(&out.join("viewpoint.jsonl"), &records)?;
    actial::model::weights::write_atomic(&out.join("manifest.jsonl"), manifest.as_bytes())?;
    eprintln!(
        "{} captures -> {} items ({} pairs) in {}",
        captures.len(),
        records.len(),
        records.len() / 3,
        out.display()
    );
    for (reason, n) in &skipped {
        eprintln!("  {n} skipped: {reason}");
    }
    for e in &examples {
        eprintln!("  e.g. {e}");
    }
    Ok(())
}

fn stats(file: &Path) -> Result<()> {
    let rep = load_any(file, false)?;
    println!("{}", rep.summary());
    for e in &rep.examples {
        println!("  e.g. {e}");
    }
    let mut by_kind: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    let (mut missing, mut unreadable, mut images, mut chars) = (0, 0, 0, 0);
    let mut bad_examples = Vec::new();
    // Each distinct image's header is read (format, size within the pixel
    // cap): a file that exists but will not decode is found here, not in
    // the middle of training.
    let mut seen = std::collections::HashSet::new();
    for r in &rep.records {
        *by_kind.entry(&r.kind).or_default().entry(&r.answer).or_default() += 1;
        images += r.images.len();
        chars += r.prompt.len();
        for img in &r.images {
            let checked = match img {
                ImageRef::Path(p) if !p.is_file() => {
                    missing += 1;
                    continue;
                }
                ImageRef::Path(p) if !seen.insert(p.clone()) => continue,
                ImageRef::Path(p) => {
                    image_header(image::ImageReader::open(p).map_err(|e| e.to_string()), &p.display().to_string())
                }
                ImageRef::Bytes(b) => image_header(
                    Ok(image::ImageReader::new(std::io::BufReader::new(std::io::Cursor::new(b.as_slice())))),
                    &format!("record {}", r.id),
                ),
            };
            if let Err(e) = checked {
                unreadable += 1;
                if bad_examples.len() < 5 {
                    bad_examples.push(e);
                }
            }
        }
    }
    println!("{:<28} {:>7}  answers", "kind", "items");
    for (kind, answers) in &by_kind {
        let n: usize = answers.values().sum();
        let dist: Vec<String> =
            answers.iter().map(|(a, c)| format!("{a}:{:.0}%", 100.0 * *c as f64 / n as f64)).collect();
        println!("{kind:<28} {n:>7}  {}", dist.join(" "));
    }
    let n = rep.records.len().max(1) as f64;
    println!(
        "images per item {:.2}, prompt length {:.0} chars on average, {missing} image files missing, {unreadable} unreadable",
        images as f64 / n,
        chars as f64 / n
    );
    for e in &bad_examples {
        println!("  e.g. {e}");
    }
    if missing + unreadable > 0 {
        return Err(actial::arg_err!(
            "stats",
            "{} references {missing} missing and {unreadable} unreadable images",
            file.display()
        ));
    }
    Ok(())
}

/// An image's header: a known format and dimensions within the pixel cap.
fn image_header<R: std::io::BufRead + std::io::Seek>(
    reader: std::result::Result<image::ImageReader<R>, String>,
    what: &str,
) -> std::result::Result<(), String> {
    let (w, h) = reader
        .and_then(|r| r.with_guessed_format().map_err(|e| e.to_string()))
        .and_then(|r| r.into_dimensions().map_err(|e| e.to_string()))
        .map_err(|e| format!("{what}: cannot read the image header: {e}"))?;
    actial::model::image::check_image_dimensions(w, h, what)
}

fn inspect(file: &Path, out: &Path, n: usize, start: usize) -> Result<()> {
    let rep = load_any(file, true)?;
    let items: Vec<QaRecord> = rep.records.into_iter().skip(start).take(n).collect();
    let max_images = items.iter().map(|r| r.images.len()).max().unwrap_or(0);
    let sheet = contact_sheet(&items, max_images)?;
    sheet.save(out).map_err(|e| actial::arg_err!("inspect", "{}: {e}", out.display()))?;
    eprintln!("wrote {} items to {}", items.len(), out.display());
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run_mix(letters: &Path, out: &Path, import: Option<&Path>, cfg: MixConfig) -> Result<()> {
    let f = cfg.cot_fraction;
    if !(0.0..1.0).contains(&f) {
        return Err(actial::arg_err!("mix", "--cot-fraction must be in [0, 1), got {f}"));
    }
    let rep = load_any(letters, false)?;
    eprintln!("{}", rep.summary());
    let mut imported = HashMap::new();
    if let Some(p) = import {
        let text = std::fs::read_to_string(p).map_err(io_err(p))?;
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| actial::arg_err!("mix", "{}:{}: {e}", p.display(), i + 1))?;
            let (Some(id), Some(resp)) =
                (v.get("id").and_then(|x| x.as_str()), v.get("response").and_then(|x| x.as_str()))
            else {
                return Err(actial::arg_err!("mix", "{}:{}: expected {{\"id\", \"response\"}}", p.display(), i + 1));
            };
            imported.insert(id.to_string(), resp.to_string());
        }
    }
    let (items, m) = mix(&rep.records, &imported, &cfg);
    write_sharegpt(out, &items)?;
    eprintln!(
        "{} items: {} letter-only + {} CoT slots from {} unique CoTs ({} imported) -> {}",
        items.len(),
        m.letters,
        m.cot_slots,
        m.cot_unique,
        m.imported,
        out.display()
    );
    for (reason, n) in &m.skipped {
        eprintln!("  {n} skipped: {reason}");
    }
    Ok(())
}

fn main() -> ExitCode {
    actial::util::keep_freed_memory();
    let res = match Cli::parse().cmd {
        Cmd::Synth { out, pairs, seed, size, supersample, scene } => synth(&out, pairs, seed, size, supersample, scene),
        Cmd::Build { captures, out, max_pairs_per_capture, min_yaw, max_yaw, seed } => {
            build(&captures, &out, max_pairs_per_capture, min_yaw, max_yaw, seed)
        }
        Cmd::Stats { file } => stats(&file),
        Cmd::Inspect { file, out, n, start } => inspect(&file, &out, n, start),
        Cmd::Mix { letters, out, cot_fraction, cot_unique, import_cots, system, cot_instruction, cot_style, seed } => {
            let mc = MixConfig {
                cot_fraction,
                cot_unique,
                seed,
                cot_instruction,
                cot_style,
                system: system.unwrap_or_else(|| MixConfig::default().system),
            };
            run_mix(&letters, &out, import_cots.as_deref(), mc)
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
