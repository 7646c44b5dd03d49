//! One benchmark row -> the records it asks, for every published layout
//! (see the table in the module above). Reasons for refusing a row name the
//! column they are about.

use std::path::Path;

use base64::Engine;
use serde_json::{Value, json};

use super::{Benchmark, PromptStyle};
use crate::data::formats::{image_ref, parse_mcq_row, parse_sharegpt};
use crate::data::parquet::{image_of, parse_row};
use crate::data::qa::{ImageRef, LETTER_INSTRUCTION, LETTERS, QaRecord};

/// Why a row gives no record: it cannot be read, or it has no published answer
/// (BLINK's test split), which is neither right nor wrong.
#[derive(Debug)]
pub enum Fail {
    Bad(String),
    Unscorable(String),
}

impl From<String> for Fail {
    fn from(s: String) -> Fail {
        Fail::Bad(s)
    }
}

impl From<&str> for Fail {
    fn from(s: &str) -> Fail {
        Fail::Bad(s.to_string())
    }
}

/// What a row's reading depends on besides the row.
pub struct Ctx<'a> {
    pub bench: Benchmark,
    pub file: &'a Path,
    /// The file's folder: relative image paths start here.
    pub base: &'a Path,
    /// A VLMEvalKit circular file (copies at `index + k·1e6`).
    pub circular: bool,
    pub style: PromptStyle,
    /// Ask SAT questions once per rotation of their options (circular evaluation).
    pub rotate_options: bool,
}

type Res<T> = std::result::Result<T, Fail>;

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

/// `nan` is how pandas writes an empty cell.
fn present(s: &str) -> bool {
    !s.is_empty() && s != "nan"
}

/// Decodes a base64 image and reads its header, so a broken image is caught
/// with its row (the pixels are decoded later, a batch at a time).
fn b64_image(s: &str) -> std::result::Result<ImageRef, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| format!("column image: undecodable base64 image: {e}"))?;
    let (w, h) = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| format!("column image: undecodable image: {e}"))?
        .into_dimensions()
        .map_err(|e| format!("column image: undecodable image: {e}"))?;
    crate::model::image::check_image_dimensions(w, h, "base64 image")?;
    Ok(ImageRef::Bytes(bytes))
}

/// The images of a VLMEvalKit `image` cell: one base64 image, or a list of them
/// as JSON (MMSI-Bench) or as a Python list literal. A reference to another
/// row's index was resolved by the reader; one left here names no image row.
fn cell_images(cell: &str) -> std::result::Result<Vec<ImageRef>, String> {
    let cell = cell.trim();
    if cell.starts_with('[') {
        let list: Vec<String> = match serde_json::from_str::<Vec<String>>(cell) {
            Ok(l) => l,
            Err(_) => cell
                .trim_matches(|c| c == '[' || c == ']')
                .split(',')
                .map(|s| s.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        };
        if list.is_empty() {
            return Err("column image: an empty list of images".into());
        }
        return list.iter().map(|s| b64_image(s)).collect();
    }
    if cell.len() <= 64 {
        return Err(format!("column image: refers to row index {cell:?}, which holds no image in this file"));
    }
    Ok(vec![b64_image(cell)?])
}

/// An image value from parquet/JSON: `{bytes, path}`, a path (relative to the
/// file), or base64 text.
fn any_image(v: &Value, ctx: &Ctx) -> std::result::Result<ImageRef, String> {
    match v {
        Value::String(s) if s.len() > 256 => b64_image(s),
        Value::Object(o) if o.get("bytes").is_some_and(|b| b.is_string()) => image_of(v),
        _ => image_ref(v, ctx.base),
    }
}

fn is_letter(s: &str) -> Option<usize> {
    let s = s.trim().trim_start_matches('(').trim_end_matches([')', '.']).trim();
    (s.len() == 1).then(|| LETTERS.iter().position(|l| l.to_string() == s.to_ascii_uppercase())).flatten()
}

/// "(C)", "C", "C." or an option's text -> the option index.
fn answer_index(answer: &str, options: &[String]) -> std::result::Result<usize, String> {
    if let Some(i) = is_letter(answer).filter(|&i| i < options.len()) {
        return Ok(i);
    }
    let a = answer.trim();
    options.iter().position(|o| o.trim() == a).ok_or_else(|| format!("column answer: not an option: {a:?}"))
}

/// The question with its options, as the prompt style lays them out.
fn options_prompt(style: PromptStyle, hint: Option<&str>, question: &str, options: &[String]) -> String {
    match style {
        // The release's training layout: `question A: opt B: opt instruction`.
        PromptStyle::Letter => {
            let mut s = match hint {
                Some(h) => format!("{h}\n{}", question.trim()),
                None => question.trim().to_string(),
            };
            for (l, o) in LETTERS.iter().zip(options) {
                s.push_str(&format!(" {l}: {o}"));
            }
            format!("{s} {LETTER_INSTRUCTION}")
        }
        // VLMEvalKit's multiple-choice prompt (ImageMCQDataset.build_prompt).
        PromptStyle::Actial => {
            let mut s = hint.map(|h| format!("Hint: {h}\n")).unwrap_or_default();
            s.push_str(&format!("Question: {}\nOptions:\n", question.trim()));
            for (l, o) in LETTERS.iter().zip(options) {
                s.push_str(&format!("{l}. {o}\n"));
            }
            s.push_str("Please select the correct answer from the options above. \n");
            s
        }
    }
}

/// A question whose options are part of its text (MMSI-Bench).
fn inline_prompt(style: PromptStyle, question: &str) -> String {
    match style {
        PromptStyle::Letter => format!("{}\n{LETTER_INSTRUCTION}", question.trim()),
        // VLMEvalKit's MMSI_Bench post-prompt.
        PromptStyle::Actial => format!(
            "{}\nAnswer with the option's letter from the given choices directly. Enclose the option's letter within ``.",
            question.trim()
        ),
    }
}

fn record(id: String, kind: String, images: Vec<ImageRef>, text: String, letter: char, meta: Value) -> QaRecord {
    QaRecord {
        id,
        kind,
        system: None,
        prompt: format!("{}{text}", "<image>".repeat(images.len())),
        images,
        response: letter.to_string(),
        answer: letter.to_string(),
        meta,
    }
}

fn check_options(options: &[String]) -> std::result::Result<(), String> {
    if options.len() < 2 || options.len() > LETTERS.len() {
        return Err(format!("{} options (2 to {} supported)", options.len(), LETTERS.len()));
    }
    Ok(())
}

fn list_of_strings(v: &Value, keys: &[&str]) -> std::result::Result<Vec<String>, String> {
    match field(v, keys) {
        Some(Value::Array(a)) => Ok(a.iter().map(scalar).collect()),
        // A JSON list stored as text (csv/tsv exports of HF datasets).
        Some(Value::String(s)) if s.trim_start().starts_with('[') => {
            serde_json::from_str::<Vec<Value>>(&s.replace('\'', "\""))
                .map(|a| a.iter().map(scalar).collect())
                .map_err(|e| format!("column {}: not a list: {e}", keys[0]))
        }
        _ => Err(format!("no {} list", keys.join("/"))),
    }
}

/// The records of one row of benchmark `ctx.bench`.
pub fn row_records(v: &Value, row: usize, ctx: &Ctx) -> Res<Vec<QaRecord>> {
    let vlmeval = v.get("A").is_some() || v.get("index").is_some() && v.get("image").is_some_and(Value::is_string);
    let one = |r: std::result::Result<QaRecord, String>| r.map(|r| vec![r]).map_err(Fail::Bad);
    match ctx.bench {
        _ if vlmeval => one(vlmeval_row(v, row, ctx)),
        Benchmark::CvBench => one(cvbench_row(v, row, ctx)),
        Benchmark::Blink => blink_row(v, row, ctx).map(|r| vec![r]),
        Benchmark::Mmsi => one(mmsi_row(v, row, ctx)),
        Benchmark::Sat => sat_row(v, row, ctx),
        Benchmark::Viewpoint => one(viewpoint_row(v, row, ctx)),
        Benchmark::ThreeDsr => Err(Fail::Bad("not a VLMEvalKit row (no index/image/A columns)".into())),
    }
}

/// 3DSRBench's subtype -> its type (the 4 types of the official script).
pub fn threedsr_type(category: &str) -> String {
    ["height", "location", "orientation", "multi_object"]
        .into_iter()
        .find(|t| category.starts_with(t))
        .unwrap_or(category)
        .to_string()
}

/// 3DSRBench's question id: the `qid` with its circular `-k` suffix removed
/// (`-flip` variants stay questions of their own).
pub fn threedsr_question(qid: &str) -> String {
    match qid.rsplit_once('-') {
        Some((base, k)) if !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()) => base.to_string(),
        _ => qid.to_string(),
    }
}

/// CV-Bench's task type from its task name.
fn cvbench_type(task: &str) -> Option<&'static str> {
    match task.to_ascii_lowercase().as_str() {
        "count" | "relation" => Some("2D"),
        "depth" | "distance" => Some("3D"),
        _ => None,
    }
}

/// VLMEvalKit rows: options in columns A, B, ... (or, in MMSI-Bench's own TSV,
/// inside `question`); `answer` a letter; `image` base64 or a list of them.
fn vlmeval_row(v: &Value, row: usize, ctx: &Ctx) -> std::result::Result<QaRecord, String> {
    let index = field(v, &["index", "id", "idx"]).map(scalar).unwrap_or_else(|| format!("row{row}"));
    let question = text(v, &["question"])?;
    let hint = field(v, &["hint"]).map(scalar).filter(|h| present(h));
    let options: Vec<String> =
        LETTERS.iter().map_while(|l| v.get(l.to_string()).map(scalar).filter(|s| present(s))).collect();
    let answer = text(v, &["answer"])?;
    let images = match field(v, &["image"]) {
        Some(Value::String(s)) => cell_images(s)?,
        Some(other) => vec![any_image(other, ctx)?],
        None => match field(v, &["image_path"]) {
            Some(Value::Array(a)) => a.iter().map(|p| image_ref(p, ctx.base)).collect::<Result<_, _>>()?,
            Some(p) => vec![image_ref(p, ctx.base)?],
            None => return Err("no image/image_path column".into()),
        },
    };
    let category = field(v, &["category", "l2-category", "question_type", "sub_task"]).map(scalar);
    let mut meta = json!({});
    meta["group"] = json!(match (field(v, &["g_index"]), field(v, &["qid"]), field(v, &["base_qid"])) {
        (Some(g), _, _) => scalar(g),
        (None, Some(q), _) => threedsr_question(&scalar(q)),
        (None, None, Some(q)) => scalar(q),
        _ if ctx.circular => index.parse::<u64>().map(|i| (i % 1_000_000).to_string()).unwrap_or(index.clone()),
        _ => index.clone(),
    });
    if let Some(q) = field(v, &["qid"]) {
        meta["qid"] = json!(scalar(q));
    }
    let mut kind = category.clone().unwrap_or_else(|| "all".into());
    match ctx.bench {
        Benchmark::ThreeDsr => meta["type"] = json!(threedsr_type(&kind)),
        Benchmark::CvBench => {
            let task = kind.clone();
            let split = field(v, &["type", "split"]).map(scalar).filter(|s| s == "2D" || s == "3D");
            let file = ctx.file.file_name().and_then(|n| n.to_str()).unwrap_or("").to_ascii_uppercase();
            let from_file = ["2D", "3D"].into_iter().find(|t| file.contains(t));
            let ty =
                split.or(cvbench_type(&task).map(String::from)).or(from_file.map(String::from)).ok_or_else(|| {
                    format!(
                        "column category: no 2D/3D type for task {task:?} (no type/split column, not in the file name)"
                    )
                })?;
            meta["source"] = json!(field(v, &["source"]).map(scalar).unwrap_or_default());
            kind = format!("{ty}/{task}");
            meta["type"] = json!(ty);
        }
        _ => {}
    }
    let hint = hint.as_deref();
    if options.is_empty() {
        // MMSI_bench.tsv: the options are part of the question.
        let letter = is_letter(&answer).ok_or_else(|| format!("column answer: not an option letter: {answer:?}"))?;
        inline_options_contain(&question, LETTERS[letter])?;
        let q = match hint {
            Some(h) => format!("{h}\n{question}"),
            None => question,
        };
        return Ok(record(index, kind, images, inline_prompt(ctx.style, &q), LETTERS[letter], meta));
    }
    check_options(&options)?;
    let answer = answer_index(&answer, &options)?;
    Ok(record(index, kind, images, options_prompt(ctx.style, hint, &question, &options), LETTERS[answer], meta))
}

/// The options live in the question text ("A: ...", "A. ...", "(A) ..."): the
/// answer must be one of them.
fn inline_options_contain(question: &str, letter: char) -> std::result::Result<(), String> {
    let listed = [format!("{letter}:"), format!("{letter}."), format!("({letter})")];
    if !listed.iter().any(|p| question.contains(p.as_str())) {
        return Err(format!("column answer: {letter} is not among the options in the question"));
    }
    Ok(())
}

/// CV-Bench (nyu-visionx/CV-Bench): `type` 2D/3D, `task`, `source`; `image`
/// (parquet) or `filename` (jsonl, relative to the file).
fn cvbench_row(v: &Value, row: usize, ctx: &Ctx) -> std::result::Result<QaRecord, String> {
    let id = field(v, &["idx", "index", "id"]).map(scalar).unwrap_or_else(|| format!("row{row}"));
    let ty = text(v, &["type"])?;
    if ty != "2D" && ty != "3D" {
        return Err(format!("column type: must be 2D or 3D, not {ty:?}"));
    }
    let task = text(v, &["task"])?;
    let options = list_of_strings(v, &["choices"])?;
    check_options(&options)?;
    let answer = answer_index(&text(v, &["answer"])?, &options)?;
    let image = match field(v, &["image", "filename"]) {
        Some(img) => any_image(img, ctx)?,
        None => return Err("no image/filename column".into()),
    };
    let source = field(v, &["source"]).map(scalar).unwrap_or_default();
    let meta = json!({ "group": id, "type": ty, "source": source });
    let prompt = options_prompt(ctx.style, None, &text(v, &["question"])?, &options);
    Ok(record(id, format!("{ty}/{task}"), vec![image], prompt, LETTERS[answer], meta))
}

/// BLINK (BLINK-Benchmark/BLINK, one parquet per subtask): `image_1` ..
/// `image_4`, `choices`, `answer` "(A)" or "hidden" (the test split).
fn blink_row(v: &Value, row: usize, ctx: &Ctx) -> Res<QaRecord> {
    let id = text(v, &["idx", "id", "index"]).unwrap_or_else(|_| format!("row{row}"));
    let task = match text(v, &["sub_task", "category"]) {
        Ok(t) => t,
        // A subtask's folder names it: `<Subtask>/val-00000-of-00001.parquet`.
        Err(e) => ctx.base.file_name().and_then(|n| n.to_str()).map(String::from).ok_or(e)?,
    };
    let answer = text(v, &["answer"])?;
    if answer.trim().eq_ignore_ascii_case("hidden") {
        return Err(Fail::Unscorable("answer hidden (BLINK's test split)".into()));
    }
    let images = (1..=4)
        .filter_map(|k| field(v, &[&format!("image_{k}")]))
        .map(|img| any_image(img, ctx))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if images.is_empty() {
        return Err("no image_1..image_4".into());
    }
    let options = list_of_strings(v, &["choices"])?;
    check_options(&options)?;
    let answer = answer_index(&answer, &options)?;
    let prompt = options_prompt(ctx.style, None, &text(v, &["question"])?, &options);
    Ok(record(id.clone(), task, images, prompt, LETTERS[answer], json!({ "group": id })))
}

/// MMSI-Bench (RunsenXu/MMSI-Bench parquet): `images` list, the options part of
/// `question`, `answer` a letter.
fn mmsi_row(v: &Value, row: usize, ctx: &Ctx) -> std::result::Result<QaRecord, String> {
    let id = field(v, &["id", "index"]).map(scalar).unwrap_or_else(|| format!("row{row}"));
    let images = match field(v, &["images", "image"]) {
        Some(Value::Array(a)) => a.iter().map(|x| any_image(x, ctx)).collect::<std::result::Result<Vec<_>, _>>()?,
        Some(x) => vec![any_image(x, ctx)?],
        None => return Err("no images column".into()),
    };
    let answer = text(v, &["answer"])?;
    let letter = is_letter(&answer).ok_or_else(|| format!("column answer: not an option letter: {answer:?}"))?;
    let question = text(v, &["question"])?;
    inline_options_contain(&question, LETTERS[letter])?;
    let kind = field(v, &["question_type", "category"]).map(scalar).unwrap_or_else(|| "all".into());
    Ok(record(id.clone(), kind, images, inline_prompt(ctx.style, &question), LETTERS[letter], json!({ "group": id })))
}

/// SAT (array/SAT): `image_bytes`, `question`, `answers` (the options),
/// `correct_answer` (an option's text), `question_type`. With `rotate_options`
/// each question is asked once per rotation of its options (copy k shows option
/// `(i + k) mod n` at position i), the circular evaluation SAT's authors report.
/// Other layouts (verl's RL parquet) are read as they are.
fn sat_row(v: &Value, row: usize, ctx: &Ctx) -> Res<Vec<QaRecord>> {
    let Some(options) = field(v, &["answers", "choices"]).and_then(Value::as_array) else {
        let mut r = parse_row(v, row, LETTER_INSTRUCTION)?;
        r.meta = json!({ "group": r.id });
        return Ok(vec![r]);
    };
    let options: Vec<String> = options.iter().map(scalar).collect();
    check_options(&options)?;
    let id = field(v, &["id", "idx", "index"]).map(scalar).unwrap_or_else(|| format!("row{row}"));
    let truth = text(v, &["correct_answer", "answer"])?;
    let answer = answer_index(&truth, &options)?;
    let images: Vec<ImageRef> = match field(v, &["image_bytes", "images", "image"]) {
        Some(Value::Array(a)) => a.iter().map(|x| any_image(x, ctx)).collect::<std::result::Result<_, _>>()?,
        Some(x) => vec![any_image(x, ctx)?],
        None => return Err("no image_bytes/images column".into()),
    };
    let question = text(v, &["question"])?;
    let kind = field(v, &["question_type", "category"]).map(scalar).unwrap_or_else(|| "all".into());
    let n = options.len();
    let copies = if ctx.rotate_options { n } else { 1 };
    Ok((0..copies)
        .map(|k| {
            let rotated: Vec<String> = (0..n).map(|i| options[(i + k) % n].clone()).collect();
            let at = (answer + n - k) % n;
            let rid = if k == 0 { id.clone() } else { format!("{id}@rot{k}") };
            let meta = json!({ "group": id, "rotation": k });
            let prompt = options_prompt(ctx.style, None, &question, &rotated);
            record(rid, kind.clone(), images.clone(), prompt, LETTERS[at], meta)
        })
        .collect())
}

/// Viewpoint-100K: LLaMA-Factory ShareGPT rows (no question type: it is
/// recovered from the question), the generic multiple-choice layout, or parquet.
fn viewpoint_row(v: &Value, row: usize, ctx: &Ctx) -> std::result::Result<QaRecord, String> {
    let mut r = if v.get("messages").is_some() || v.get("conversations").is_some() {
        parse_sharegpt(v, ctx.base, row)?
    } else if v.get("options").is_some() {
        parse_mcq_row(v, ctx.base, row, LETTER_INSTRUCTION)?
    } else {
        parse_row(v, row, LETTER_INSTRUCTION)?
    };
    if v.get("kind").is_none() {
        r.kind = viewpoint_kind(&r.prompt).to_string();
    }
    if !r.meta.is_object() {
        r.meta = json!({});
    }
    r.meta["group"] = json!(r.id);
    Ok(r)
}

/// The viewpoint question type of a question text (the release's three
/// phrasings), `other` when none matches.
pub fn viewpoint_kind(question: &str) -> &'static str {
    let q = question.to_ascii_lowercase();
    let camera = q.contains("from the camera's perspective");
    if q.contains("from the object's perspective") {
        "object_translation"
    } else if camera && (q.contains("orientation") || q.contains("rotate")) {
        "camera_rotation"
    } else if camera && (q.contains("position") || q.contains("move")) {
        "camera_translation"
    } else {
        "other"
    }
}
