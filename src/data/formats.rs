//! Dataset files: ShareGPT-style json/jsonl as LLaMA-Factory reads it (the layout
//! of the published Viewpoint-100K), and a generic multiple-choice jsonl.
//!
//! Written rows look like
//! `{"id", "kind", "messages": [{"role", "content"}...], "images": [paths], "answer"}`
//! with one `<image>` placeholder per image in the user turn. Reading also accepts
//! `conversations` with `from`/`value`, a top-level `system`, images as paths
//! (relative to the file), `{"path": ..}` or `{"bytes": base64}` objects, and a
//! JSON array instead of lines.

use std::collections::BTreeMap;
use std::io::{BufRead, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{Value, json};

use super::qa::{ImageRef, QaRecord};
use crate::error::{Error, Result};

/// What a lenient load kept and why it dropped the rest.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub records: Vec<QaRecord>,
    /// Reason -> count of skipped rows.
    pub skipped: BTreeMap<String, usize>,
    /// First few skipped rows as `file:line: reason`, for the user to look at.
    pub examples: Vec<String>,
    /// Reason -> count of rows read but not scorable (no published answer).
    pub unscorable: BTreeMap<String, usize>,
}

impl LoadReport {
    pub fn skipped_total(&self) -> usize {
        self.skipped.values().sum()
    }

    /// One line per reason: "N rows skipped: reason".
    pub fn summary(&self) -> String {
        let mut s = format!("{} records loaded", self.records.len());
        for (reason, n) in &self.skipped {
            s.push_str(&format!("\n  {n} rows skipped: {reason}"));
        }
        s
    }
}

fn row_err(file: &Path, line: usize, msg: impl std::fmt::Display) -> Error {
    Error::Arg { op: "dataset", msg: format!("{}:{line}: {msg}", file.display()) }
}

/// Reads the rows of a .json (array) or .jsonl file as (line number, value).
pub(crate) fn read_rows(path: &Path) -> Result<Vec<(usize, std::result::Result<Value, String>)>> {
    let io = |e| Error::Io { path: path.display().to_string(), source: e };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut reader = std::io::BufReader::new(file);
    let mut first = String::new();
    // Peek: a JSON array starts with '['.
    let buf = reader.fill_buf().map_err(io)?;
    let starts_array = buf.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if starts_array {
        reader.read_to_string(&mut first).map_err(io)?;
        let v: Value =
            serde_json::from_str(&first).map_err(|e| row_err(path, e.line(), format!("invalid JSON: {e}")))?;
        let rows = v.as_array().ok_or_else(|| row_err(path, 1, "expected a JSON array of rows"))?;
        return Ok(rows.iter().enumerate().map(|(i, r)| (i + 1, Ok(r.clone()))).collect());
    }
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        out.push((i + 1, serde_json::from_str(&line).map_err(|e| format!("invalid JSON: {e}"))));
    }
    Ok(out)
}

pub(crate) fn image_ref(v: &Value, base: &Path) -> std::result::Result<ImageRef, String> {
    let path = |p: &str| {
        let p = PathBuf::from(p);
        if p.is_absolute() { p } else { base.join(p) }
    };
    match v {
        Value::String(s) => Ok(ImageRef::Path(path(s))),
        Value::Object(o) => {
            if let Some(b) = o.get("bytes").and_then(Value::as_str) {
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map(ImageRef::Bytes)
                    .map_err(|e| format!("image bytes are not valid base64: {e}"))
            } else if let Some(p) = o.get("path").and_then(Value::as_str) {
                Ok(ImageRef::Path(path(p)))
            } else {
                Err("image object has neither \"bytes\" nor \"path\"".into())
            }
        }
        _ => Err(format!("image entry {v} is neither a path nor an object")),
    }
}

/// Extracts the `<answer>` content of a response, or the response itself.
pub fn answer_of(response: &str) -> String {
    let lower = response.to_ascii_lowercase();
    match (lower.find("<answer>"), lower.rfind("</answer>")) {
        (Some(a), Some(b)) if b > a + 8 => response[a + 8..b].trim().to_string(),
        _ => response.trim().to_string(),
    }
}

/// Parses one ShareGPT row.
pub(crate) fn parse_sharegpt(v: &Value, base: &Path, line: usize) -> std::result::Result<QaRecord, String> {
    let turns = v
        .get("messages")
        .or_else(|| v.get("conversations"))
        .and_then(Value::as_array)
        .ok_or("no \"messages\" or \"conversations\" list")?;
    let mut system = v.get("system").and_then(Value::as_str).map(String::from);
    let (mut prompt, mut response) = (None, None);
    for t in turns {
        let role = t.get("role").or_else(|| t.get("from")).and_then(Value::as_str).ok_or("a turn has no role/from")?;
        let content = t
            .get("content")
            .or_else(|| t.get("value"))
            .and_then(Value::as_str)
            .ok_or("a turn has no string content/value")?;
        match role {
            "system" => system = Some(content.to_string()),
            "user" | "human" if prompt.is_none() => prompt = Some(content.to_string()),
            "assistant" | "gpt" if prompt.is_none() => return Err("no user turn before the assistant turn".into()),
            "assistant" | "gpt" if response.is_none() => response = Some(content.to_string()),
            "user" | "human" | "assistant" | "gpt" => return Err("multi-turn rows are not supported".into()),
            other => return Err(format!("unknown role {other:?}")),
        }
    }
    let prompt = prompt.ok_or("no user turn")?;
    let response = response.unwrap_or_default();
    let images: Vec<ImageRef> = match v.get("images").or_else(|| v.get("image")) {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a.iter().map(|x| image_ref(x, base)).collect::<std::result::Result<_, _>>()?,
        Some(x) => vec![image_ref(x, base)?],
    };
    let n = prompt.matches("<image>").count();
    if n != images.len() {
        return Err(format!("<image> placeholders do not match the images: {n} vs {}", images.len()));
    }
    let answer = v.get("answer").and_then(Value::as_str).map(String::from).unwrap_or_else(|| answer_of(&response));
    // Nothing to train on and nothing to score against: an empty reply would
    // be trained and an empty answer scored.
    if response.trim().is_empty() && answer.trim().is_empty() {
        return Err("no assistant turn and no \"answer\"".into());
    }
    Ok(QaRecord {
        id: v
            .get("id")
            .map(|x| x.as_str().map(String::from).unwrap_or_else(|| x.to_string()))
            .unwrap_or_else(|| format!("line{line}")),
        kind: v.get("kind").and_then(Value::as_str).unwrap_or("sharegpt").to_string(),
        system,
        prompt,
        images,
        response,
        answer,
        meta: v.get("meta").cloned().unwrap_or(Value::Null),
    })
}

/// Loads a ShareGPT json/jsonl file. `strict`: the first bad row is an error naming
/// file and line; otherwise bad rows are counted by reason in the report.
pub fn load_sharegpt(path: &Path, strict: bool) -> Result<LoadReport> {
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut report = LoadReport::default();
    for (line, row) in read_rows(path)? {
        match row.and_then(|v| parse_sharegpt(&v, &base, line)) {
            Ok(r) => report.records.push(r),
            Err(reason) if strict => return Err(row_err(path, line, reason)),
            Err(reason) => {
                if report.examples.len() < 5 {
                    report.examples.push(format!("{}:{line}: {reason}", path.display()));
                }
                let key = reason.split(':').next().unwrap_or(&reason).to_string();
                *report.skipped.entry(key).or_default() += 1;
            }
        }
    }
    Ok(report)
}

/// Parses one row of the generic multiple-choice layout (see `load_mcq`).
pub(crate) fn parse_mcq_row(
    v: &Value,
    base: &Path,
    line: usize,
    instruction: &str,
) -> std::result::Result<QaRecord, String> {
    let question = v.get("question").and_then(Value::as_str).ok_or("no \"question\" string")?;
    let options: Vec<String> = v
        .get("options")
        .and_then(Value::as_array)
        .ok_or("no \"options\" list")?
        .iter()
        .map(|o| o.as_str().map(String::from).ok_or("options must be strings"))
        .collect::<std::result::Result<_, _>>()?;
    if options.len() < 2 || options.len() > super::qa::LETTERS.len() {
        return Err(format!("{} options (2 to 8 supported)", options.len()));
    }
    let idx = match v.get("answer").ok_or("no \"answer\"")? {
        Value::Number(n) => n.as_u64().map(|x| x as usize).ok_or("answer index is not a whole number")?,
        Value::String(s) if s.len() == 1 && s.chars().all(|c| c.is_ascii_uppercase()) => {
            (s.as_bytes()[0] - b'A') as usize
        }
        Value::String(s) => options.iter().position(|o| o == s).ok_or("answer text is not one of the options")?,
        _ => return Err("answer must be a letter, an index or an option".into()),
    };
    if idx >= options.len() {
        return Err(format!("answer {idx} is past the {} options", options.len()));
    }
    let images: Vec<ImageRef> = match v.get("images") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a.iter().map(|x| image_ref(x, base)).collect::<std::result::Result<_, _>>()?,
        Some(x) => vec![image_ref(x, base)?],
    };
    let q = super::qa::McQuestion { kind: String::new(), question: question.into(), options, answer: idx };
    let letter = q.letter().to_string();
    Ok(QaRecord {
        id: v.get("id").and_then(Value::as_str).map(String::from).unwrap_or_else(|| format!("line{line}")),
        kind: v.get("kind").and_then(Value::as_str).unwrap_or("mcq").to_string(),
        system: None,
        prompt: format!("{}{}", "<image>".repeat(images.len()), q.prompt(instruction)),
        images,
        response: letter.clone(),
        answer: letter,
        meta: v.get("meta").cloned().unwrap_or(Value::Null),
    })
}

/// Loads a generic multiple-choice jsonl: rows with `question`, `options` (a list,
/// lettered A, B, ... in order), `answer` (a letter, or the index / text of the
/// correct option), `images` (paths or objects as above) and optional `id`,
/// `kind`. The prompt is built as `<image>...question A: .. B: ..`.
pub fn load_mcq(path: &Path, instruction: &str, strict: bool) -> Result<LoadReport> {
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut report = LoadReport::default();
    for (line, row) in read_rows(path)? {
        let parsed = row.and_then(|v| parse_mcq_row(&v, &base, line, instruction));
        match parsed {
            Ok(r) => report.records.push(r),
            Err(reason) if strict => return Err(row_err(path, line, reason)),
            Err(reason) => {
                if report.examples.len() < 5 {
                    report.examples.push(format!("{}:{line}: {reason}", path.display()));
                }
                *report.skipped.entry(reason).or_default() += 1;
            }
        }
    }
    Ok(report)
}

/// The JSON row for a record (image paths relative to `base` when possible;
/// embedded images as `{"bytes": base64}`).
pub fn sharegpt_row(r: &QaRecord, base: &Path) -> Value {
    let mut messages = Vec::new();
    if let Some(s) = &r.system {
        messages.push(json!({"role": "system", "content": s}));
    }
    messages.push(json!({"role": "user", "content": r.prompt}));
    messages.push(json!({"role": "assistant", "content": r.response}));
    let images: Vec<Value> = r
        .images
        .iter()
        .map(|i| match i {
            ImageRef::Path(p) => {
                // Relative to the file when under its folder, else absolute: paths
                // are resolved against the file's folder when read back.
                let abs = std::path::absolute(p).unwrap_or_else(|_| p.clone());
                let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
                Value::String(abs.strip_prefix(&base).map(Path::to_path_buf).unwrap_or(abs).display().to_string())
            }
            ImageRef::Bytes(b) => json!({"bytes": base64::engine::general_purpose::STANDARD.encode(b)}),
        })
        .collect();
    let mut row = json!({"id": r.id, "kind": r.kind, "messages": messages, "images": images, "answer": r.answer});
    if !r.meta.is_null() {
        row["meta"] = r.meta.clone();
    }
    row
}

/// Writes records as jsonl, atomically (temp file + rename).
pub fn write_sharegpt(path: &Path, records: &[QaRecord]) -> Result<()> {
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut buf = BufWriter::new(Vec::new());
    for r in records {
        let line = serde_json::to_string(&sharegpt_row(r, &base)).expect("a JSON value serialises");
        writeln!(buf, "{line}").expect("writing to memory");
    }
    let data = buf.into_inner().expect("flushing memory");
    crate::util::write_atomic(path, &data)
}

/// Loads any supported dataset file: `.parquet` (spatial QA columns), or
/// json/jsonl in the ShareGPT layout or the generic multiple-choice layout
/// (decided by the first row's keys).
pub fn load_any(path: &Path, strict: bool) -> Result<LoadReport> {
    if path.extension().and_then(|e| e.to_str()) == Some("parquet") {
        return super::parquet::load_parquet_qa(path, super::qa::LETTER_INSTRUCTION, strict);
    }
    let first = read_rows(path)?.into_iter().find_map(|(_, r)| r.ok());
    match first {
        Some(v) if v.get("question").is_some() && v.get("options").is_some() => {
            load_mcq(path, super::qa::LETTER_INSTRUCTION, strict)
        }
        _ => load_sharegpt(path, strict),
    }
}
