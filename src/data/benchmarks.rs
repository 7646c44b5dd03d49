//! Readers for the spatial benchmarks the paper reports, in the layouts they are
//! distributed in, and their scoring rules.
//!
//! | benchmark | files read | category | scoring |
//! |---|---|---|---|
//! | `viewpoint` (Viewpoint-100K test) | ShareGPT json/jsonl | `kind` | accuracy |
//! | `sat` (SAT test) | parquet (`image_bytes`, `question`, `answers`, `correct_answer`, `question_type`) | `question_type` | accuracy |
//! | `cvbench` (CV-Bench) | parquet or jsonl (`idx`, `type`, `task`, `image`/`filename`, `question`, `choices`, `answer` "(C)", `source`) | `type/task` | (2D + 3D) / 2, 2D = mean over its sources |
//! | `blink` (BLINK) | parquet per subtask (`idx`, `sub_task`, `image_1..4`, `question`, `choices`, `answer` "(A)") | `sub_task` | accuracy |
//! | `3dsrbench` (3DSRBench) | VLMEvalKit TSV (`index`, `question`, `A..D`, `answer`, `category`, `image` base64) | `category` | circular / flip groups |
//! | `mmsi` (MMSI-Bench) | parquet (`id`, `images` list, `question` with its options, `answer`, `question_type`) | `question_type` | accuracy |
//!
//! Every reader also accepts the VLMEvalKit TSV of the same benchmark (base64
//! `image` column, a Python-list string of base64 images for multi-image rows, or
//! the `index` of another row whose image it shares). Grouped scoring
//! (3DSRBench's CircularEval and FlipEval): rows that share a group (column
//! `g_index` or `base_qid`, else `index mod 1e6` when the file holds indices past 1e6, as in
//! VLMEvalKit's circular files) count as one question, right only when every row
//! of the group is right.
//!
//! Errors name the file and the row: its line in text files (a TSV's header is
//! line 1), its 0-based index in parquet files.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use serde_json::{Value, json};

use super::formats::{LoadReport, image_ref, load_any, read_rows};
use super::parquet::{image_of, load_parquet_qa, parquet_rows};
use super::qa::{ImageRef, LETTER_INSTRUCTION, LETTERS, McQuestion, QaRecord};
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

/// Reads benchmark `b` from `path`. `strict`: the first bad row is an error naming
/// the file and row; otherwise bad rows are skipped and counted by reason.
pub fn load_benchmark(b: Benchmark, path: &Path, strict: bool) -> Result<LoadReport> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let mut report = match (b, ext.as_str()) {
        (_, "tsv") => map_rows(b, path, tsv_rows(path)?, strict)?,
        (Benchmark::Viewpoint, _) => load_any(path, strict)?,
        (Benchmark::Sat, "parquet") => load_parquet_qa(path, LETTER_INSTRUCTION, strict)?,
        (_, "parquet") => {
            let rows = parquet_rows(path)?.into_iter().enumerate().map(|(i, v)| (i, Ok(v))).collect();
            map_rows(b, path, rows, strict)?
        }
        (Benchmark::Sat, _) => load_any(path, strict)?,
        _ => map_rows(b, path, read_rows(path)?, strict)?,
    };
    for r in &mut report.records {
        tag(r, b);
    }
    Ok(report)
}

/// Marks a record with its benchmark (kept in `meta.benchmark`).
fn tag(r: &mut QaRecord, b: Benchmark) {
    if !r.meta.is_object() {
        r.meta = json!({});
    }
    r.meta["benchmark"] = json!(b.name());
}

type Rows = Vec<(usize, std::result::Result<Value, String>)>;

fn map_rows(b: Benchmark, path: &Path, rows: Rows, strict: bool) -> Result<LoadReport> {
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    // VLMEvalKit stores an image once and lets other rows name its row index.
    let mut by_index: BTreeMap<String, String> = BTreeMap::new();
    for (_, v) in rows.iter() {
        if let Ok(v) = v
            && let (Some(i), Some(Value::String(img))) = (v.get("index"), v.get("image"))
            && img.len() > 64
        {
            by_index.insert(scalar(i), img.clone());
        }
    }
    let circular = rows.iter().any(|(_, v)| {
        v.as_ref().ok().and_then(|v| v.get("index")).map(scalar).and_then(|s| s.parse::<u64>().ok()) >= Some(1_000_000)
    });
    let ctx = Ctx { base: &base, by_index: &by_index, circular };
    let mut report = LoadReport::default();
    for (row, v) in rows {
        let parsed = v
            .and_then(|v| match b {
                Benchmark::CvBench => cvbench_row(&v, row, &ctx),
                Benchmark::Blink => blink_row(&v, row, &ctx),
                Benchmark::Mmsi => mmsi_row(&v, row, &ctx),
                Benchmark::ThreeDsr | Benchmark::Sat | Benchmark::Viewpoint => vlmeval_row(&v, row, &ctx),
            })
            .and_then(|r| {
                match r.images.iter().find_map(|i| match i {
                    ImageRef::Path(p) if !p.is_file() => Some(p),
                    _ => None,
                }) {
                    Some(p) => Err(format!("missing image file {}", p.display())),
                    None => Ok(r),
                }
            });
        match parsed {
            Ok(r) => report.records.push(r),
            Err(reason) if strict => {
                return Err(Error::Arg {
                    op: "benchmark",
                    msg: format!("{} ({}): row {row}: {reason}", path.display(), b.name()),
                });
            }
            Err(reason) => {
                if report.examples.len() < 5 {
                    report.examples.push(format!("{}: row {row}: {reason}", path.display()));
                }
                let key = reason.split(':').next().unwrap_or(&reason).to_string();
                *report.skipped.entry(key).or_default() += 1;
            }
        }
    }
    Ok(report)
}

struct Ctx<'a> {
    base: &'a Path,
    by_index: &'a BTreeMap<String, String>,
    circular: bool,
}

/// Rows of a VLMEvalKit TSV (tab-separated, a header row, pandas quoting) as JSON
/// objects of strings; empty cells are left out.
pub fn tsv_rows(path: &Path) -> Result<Rows> {
    let mut rd = csv::ReaderBuilder::new()
        .delimiter(b'\t')
        .flexible(false)
        .from_path(path)
        .map_err(|e| Error::Arg { op: "tsv", msg: format!("{}: {e}", path.display()) })?;
    let header: Vec<String> = rd
        .headers()
        .map_err(|e| Error::Arg { op: "tsv", msg: format!("{}: header: {e}", path.display()) })?
        .iter()
        .map(String::from)
        .collect();
    let mut out = Vec::new();
    for (i, rec) in rd.records().enumerate() {
        // Row numbers count the header as row 1, like a spreadsheet.
        out.push((
            i + 2,
            rec.map_err(|e| format!("unreadable TSV row: {e}")).map(|rec| {
                Value::Object(
                    header
                        .iter()
                        .zip(rec.iter())
                        .filter(|(_, v)| !v.is_empty())
                        .map(|(k, v)| (k.clone(), Value::String(v.to_string())))
                        .collect(),
                )
            }),
        ));
    }
    Ok(out)
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn field<'v>(v: &'v Value, keys: &[&str]) -> Option<&'v Value> {
    keys.iter().find_map(|k| v.get(*k).filter(|x| !x.is_null()))
}

fn text(v: &Value, keys: &[&str]) -> std::result::Result<String, String> {
    field(v, keys).map(scalar).ok_or_else(|| format!("no {} column", keys.join("/")))
}

/// Decodes a base64 image, checking its header so a broken image is caught at
/// load time with its row.
fn b64_image(s: &str) -> std::result::Result<ImageRef, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| format!("undecodable base64 image: {e}"))?;
    let (w, h) = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| format!("undecodable image: {e}"))?
        .into_dimensions()
        .map_err(|e| format!("undecodable image: {e}"))?;
    crate::model::image::check_image_dimensions(w, h, "base64 image")?;
    Ok(ImageRef::Bytes(bytes))
}

/// The images of a VLMEvalKit `image` cell: base64, a Python list of base64
/// strings, or the index of the row holding the image.
fn vlmeval_images(cell: &str, ctx: &Ctx) -> std::result::Result<Vec<ImageRef>, String> {
    let cell = cell.trim();
    if cell.starts_with('[') {
        return cell
            .trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(|s| s.trim().trim_matches(|c| c == '\'' || c == '"'))
            .filter(|s| !s.is_empty())
            .map(b64_image)
            .collect();
    }
    if cell.len() <= 64 {
        let img =
            ctx.by_index.get(cell).ok_or_else(|| format!("image refers to row index {cell:?}, not in the file"))?;
        return Ok(vec![b64_image(img)?]);
    }
    Ok(vec![b64_image(cell)?])
}

/// An image value from parquet/json: `{bytes, path}`, a path (relative to the
/// file), or base64 text.
fn any_image(v: &Value, ctx: &Ctx) -> std::result::Result<ImageRef, String> {
    match v {
        Value::String(s) if s.len() > 256 => b64_image(s),
        Value::Object(o) if o.get("bytes").is_some_and(|b| b.is_string()) => image_of(v),
        _ => image_ref(v, ctx.base),
    }
}

/// "(C)", "C", "C." or an option's text -> the option index.
fn answer_index(answer: &str, options: &[String]) -> std::result::Result<usize, String> {
    let a = answer.trim();
    let letter = a.trim_start_matches('(').trim_end_matches([')', '.']).trim();
    if letter.len() == 1
        && let Some(i) = LETTERS.iter().position(|l| l.to_string() == letter.to_ascii_uppercase())
        && i < options.len()
    {
        return Ok(i);
    }
    options.iter().position(|o| o.trim() == a).ok_or_else(|| format!("answer is not an option: {a:?}"))
}

/// A multiple-choice record: `<image>` per image, the question, options lettered
/// A, B, ... and the letter instruction.
fn mc_record(
    id: String,
    kind: String,
    images: Vec<ImageRef>,
    question: &str,
    options: Vec<String>,
    answer: usize,
    meta: Value,
) -> std::result::Result<QaRecord, String> {
    if options.len() < 2 || options.len() > LETTERS.len() {
        return Err(format!("{} options (2 to {} supported)", options.len(), LETTERS.len()));
    }
    let q = McQuestion { kind: kind.clone(), question: question.trim().to_string(), options, answer };
    let letter = q.letter().to_string();
    Ok(QaRecord {
        id,
        kind,
        system: None,
        prompt: format!("{}{}", "<image>".repeat(images.len()), q.prompt(LETTER_INSTRUCTION)),
        images,
        response: letter.clone(),
        answer: letter,
        meta,
    })
}

fn list_of_strings(v: &Value, keys: &[&str]) -> std::result::Result<Vec<String>, String> {
    match field(v, keys) {
        Some(Value::Array(a)) => Ok(a.iter().map(scalar).collect()),
        // A JSON list stored as text (csv/tsv exports of HF datasets).
        Some(Value::String(s)) if s.trim_start().starts_with('[') => {
            let fixed = s.replace('\'', "\"");
            serde_json::from_str::<Vec<Value>>(&fixed)
                .map(|a| a.iter().map(scalar).collect())
                .map_err(|e| format!("{} is not a list: {e}", keys[0]))
        }
        _ => Err(format!("no {} list", keys.join("/"))),
    }
}

/// VLMEvalKit rows: options in columns A, B, ...; `answer` a letter.
fn vlmeval_row(v: &Value, row: usize, ctx: &Ctx) -> std::result::Result<QaRecord, String> {
    let index = field(v, &["index", "id", "idx"]).map(scalar).unwrap_or_else(|| format!("row{row}"));
    let question = text(v, &["question"])?;
    let hint = field(v, &["hint"]).map(scalar);
    let question = match hint {
        Some(h) if !h.is_empty() && h != "nan" => format!("{h}\n{question}"),
        _ => question,
    };
    let options: Vec<String> = LETTERS
        .iter()
        .map_while(|l| v.get(l.to_string()).map(scalar).filter(|s| !s.is_empty() && s != "nan"))
        .collect();
    let answer = answer_index(&text(v, &["answer"])?, &options)?;
    let images = match field(v, &["image"]) {
        Some(Value::String(s)) => vlmeval_images(s, ctx)?,
        Some(other) => vec![any_image(other, ctx)?],
        None => match field(v, &["image_path"]) {
            Some(p) => vec![image_ref(p, ctx.base)?],
            None => return Err("no image/image_path column".into()),
        },
    };
    let group = match field(v, &["g_index", "base_qid"]) {
        Some(g) => scalar(g),
        None if ctx.circular => index.parse::<u64>().map(|i| (i % 1_000_000).to_string()).unwrap_or(index.clone()),
        None => index.clone(),
    };
    let kind = field(v, &["category", "l2-category", "question_type"]).map(scalar).unwrap_or_else(|| "all".into());
    mc_record(index, kind, images, &question, options, answer, json!({ "group": group }))
}

/// CV-Bench (nyu-visionx/CV-Bench): `type` 2D/3D, `task`, `source`.
fn cvbench_row(v: &Value, row: usize, ctx: &Ctx) -> std::result::Result<QaRecord, String> {
    if v.get("A").is_some() {
        return vlmeval_row(v, row, ctx); // the VLMEvalKit TSV of CV-Bench
    }
    let id = field(v, &["idx", "index", "id"]).map(scalar).unwrap_or_else(|| format!("row{row}"));
    let ty = text(v, &["type"])?;
    if ty != "2D" && ty != "3D" {
        return Err(format!("type must be 2D or 3D, not {ty:?}"));
    }
    let task = text(v, &["task"])?;
    let options = list_of_strings(v, &["choices"])?;
    let answer = answer_index(&text(v, &["answer"])?, &options)?;
    let image = match field(v, &["image", "filename"]) {
        Some(img) => any_image(img, ctx)?,
        None => return Err("no image/filename column".into()),
    };
    let source = field(v, &["source"]).map(scalar).unwrap_or_default();
    let meta = json!({ "group": id, "type": ty, "source": source });
    mc_record(id, format!("{ty}/{task}"), vec![image], &text(v, &["question"])?, options, answer, meta)
}

/// BLINK (BLINK-Benchmark/BLINK): `image_1` .. `image_4`, `choices`, "(A)".
fn blink_row(v: &Value, row: usize, ctx: &Ctx) -> std::result::Result<QaRecord, String> {
    if v.get("A").is_some() {
        return vlmeval_row(v, row, ctx);
    }
    let id = text(v, &["idx", "id", "index"]).unwrap_or_else(|_| format!("row{row}"));
    let task = text(v, &["sub_task", "category"])?;
    let images = (1..=4)
        .filter_map(|k| field(v, &[&format!("image_{k}")]))
        .map(|img| any_image(img, ctx))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if images.is_empty() {
        return Err("no image_1..image_4".into());
    }
    let options = list_of_strings(v, &["choices"])?;
    let answer = text(v, &["answer"])?;
    if answer.eq_ignore_ascii_case("hidden") {
        return Err("answer hidden (the BLINK test split; use val)".into());
    }
    let answer = answer_index(&answer, &options)?;
    mc_record(id.clone(), task, images, &text(v, &["question"])?, options, answer, json!({ "group": id }))
}

/// MMSI-Bench (RunsenXu/MMSI-Bench): the options are part of `question`.
fn mmsi_row(v: &Value, row: usize, ctx: &Ctx) -> std::result::Result<QaRecord, String> {
    if v.get("A").is_some() {
        return vlmeval_row(v, row, ctx);
    }
    let id = field(v, &["id", "index"]).map(scalar).unwrap_or_else(|| format!("row{row}"));
    let images = match field(v, &["images", "image"]) {
        Some(Value::Array(a)) => a.iter().map(|x| any_image(x, ctx)).collect::<std::result::Result<Vec<_>, _>>()?,
        Some(x) => vec![any_image(x, ctx)?],
        None => return Err("no images column".into()),
    };
    let answer = text(v, &["answer"])?;
    let letter = answer.trim().trim_start_matches('(').trim_end_matches([')', '.']).trim().to_ascii_uppercase();
    if letter.len() != 1 || !LETTERS.iter().any(|l| l.to_string() == letter) {
        return Err(format!("answer is not an option letter: {answer:?}"));
    }
    let question = text(v, &["question"])?;
    // The options live in the question text ("A: ...", "A. ...", "(A) ..."): the
    // answer must be one of them.
    let listed = [format!("{letter}:"), format!("{letter}."), format!("({letter})")];
    if !listed.iter().any(|p| question.contains(p.as_str())) {
        return Err(format!("answer {letter} is not among the options in the question"));
    }
    Ok(QaRecord {
        id: id.clone(),
        kind: field(v, &["question_type", "category"]).map(scalar).unwrap_or_else(|| "all".into()),
        system: None,
        prompt: format!("{}{}\n{}", "<image>".repeat(images.len()), question.trim(), LETTER_INSTRUCTION),
        images,
        response: letter.clone(),
        answer: letter,
        meta: json!({ "group": id }),
    })
}

/// One scored item as the scorer sees it.
#[derive(Clone, Debug)]
pub struct Scored<'a> {
    pub kind: &'a str,
    pub meta: &'a Value,
    pub correct: bool,
}

/// A benchmark's scores: the headline number by its own rule, per category, and
/// the plain per-item accuracy.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BenchScore {
    pub overall: f64,
    /// How `overall` is computed.
    pub rule: String,
    pub items: usize,
    /// Questions after grouping (circular / flip copies count once).
    pub questions: usize,
    pub item_accuracy: f64,
    /// category -> (accuracy, questions)
    pub categories: BTreeMap<String, (f64, usize)>,
}

/// Scores items by the benchmark's rule.
pub fn score(b: Benchmark, items: &[Scored]) -> BenchScore {
    // Grouped questions: right only when every copy is right.
    let mut groups: BTreeMap<(String, String), (bool, &Value)> = BTreeMap::new();
    for (i, it) in items.iter().enumerate() {
        // An item without a group is its own question.
        let g = it.meta.get("group").map(scalar).unwrap_or_else(|| format!("#item{i}"));
        let key = (it.kind.to_string(), g);
        let e = groups.entry(key).or_insert((true, it.meta));
        e.0 &= it.correct;
    }
    let mut cats: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for ((kind, _), (ok, _)) in &groups {
        let e = cats.entry(kind.clone()).or_default();
        e.0 += usize::from(*ok);
        e.1 += 1;
    }
    let frac = |a: usize, n: usize| if n == 0 { 0.0 } else { a as f64 / n as f64 };
    let categories: BTreeMap<String, (f64, usize)> =
        cats.iter().map(|(k, &(c, n))| (k.clone(), (frac(c, n), n))).collect();
    let right = groups.values().filter(|g| g.0).count();
    let item_accuracy = frac(items.iter().filter(|i| i.correct).count(), items.len());
    let (overall, rule) = match b {
        Benchmark::CvBench => {
            // Official: 2D = mean of the ADE20K and COCO accuracies, 3D = Omni3D,
            // overall = (2D + 3D) / 2. Without a source column: 2D and 3D accuracy.
            let mut by: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
            for (ok, meta) in groups.values() {
                let ty = meta.get("type").map(scalar).unwrap_or_default();
                let src = meta.get("source").map(scalar).unwrap_or_default();
                let e = by.entry((ty, src)).or_default();
                e.0 += usize::from(*ok);
                e.1 += 1;
            }
            let avg = |ty: &str| {
                let accs: Vec<f64> = by.iter().filter(|((t, _), _)| t == ty).map(|(_, &(c, n))| frac(c, n)).collect();
                if accs.is_empty() { None } else { Some(accs.iter().sum::<f64>() / accs.len() as f64) }
            };
            match (avg("2D"), avg("3D")) {
                (Some(a), Some(c)) => ((a + c) / 2.0, "(2D average over sources + 3D average) / 2".to_string()),
                (Some(a), None) | (None, Some(a)) => (a, "only one of 2D / 3D present: its average".to_string()),
                (None, None) => (frac(right, groups.len()), "accuracy".to_string()),
            }
        }
        _ if groups.len() < items.len() => {
            (frac(right, groups.len()), "grouped accuracy (circular / flip copies all right)".to_string())
        }
        _ => (frac(right, groups.len()), "accuracy".to_string()),
    };
    BenchScore { overall, rule, items: items.len(), questions: groups.len(), item_accuracy, categories }
}
