//! Parquet spatial QA (the published SAT RL data and similar): rows are read with
//! the parquet crate's record API and mapped by column names, which covers
//! array/SAT's layout (`image_bytes`, `question`, `answers`, `correct_answer`,
//! `question_type`) and verl's RL layout (`prompt` messages with `<image>`
//! placeholders, `images: [{bytes, path}]`, `reward_model.ground_truth`).

use std::fs::File;
use std::path::Path;

use base64::Engine;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use serde_json::{Map, Value, json};

use super::formats::LoadReport;
use super::qa::{ImageRef, McQuestion, QaRecord};
use crate::error::{Error, Result};

/// A parquet field as JSON; binary values become `{"bytes": base64}` objects,
/// except directly under a field named `bytes` (the HF image struct), where they
/// are the base64 string itself.
pub(crate) fn to_value(f: &Field, name: &str) -> Value {
    match f {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Str(s) => Value::String(s.clone()),
        Field::Bytes(b) => {
            let s = base64::engine::general_purpose::STANDARD.encode(b.data());
            if name == "bytes" { Value::String(s) } else { json!({ "bytes": s }) }
        }
        Field::Group(row) => {
            Value::Object(row.get_column_iter().map(|(k, v)| (k.clone(), to_value(v, k))).collect::<Map<_, _>>())
        }
        Field::ListInternal(list) => Value::Array(list.elements().iter().map(|f| to_value(f, name)).collect()),
        other => other.to_json_value(),
    }
}

fn first<'a>(v: &'a Value, keys: &[&'static str]) -> Option<(&'static str, &'a Value)> {
    keys.iter().find_map(|k| v.get(*k).filter(|x| !x.is_null()).map(|x| (*k, x)))
}

pub(crate) fn image_of(v: &Value) -> std::result::Result<ImageRef, String> {
    let bytes =
        |s: &str| base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| format!("bad image bytes: {e}"));
    let img = match v {
        Value::Object(o) => match (o.get("bytes"), o.get("path")) {
            (Some(Value::String(b)), _) => ImageRef::Bytes(bytes(b)?),
            (_, Some(Value::String(p))) => ImageRef::Path(p.into()),
            _ => return Err("image has neither bytes nor path".into()),
        },
        Value::String(p) => ImageRef::Path(p.into()),
        _ => return Err(format!("unsupported image value {v}")),
    };
    if let ImageRef::Bytes(b) = &img {
        // Read the header only: catches undecodable bytes without a full decode.
        let reader =
            image::ImageReader::new(std::io::Cursor::new(b)).with_guessed_format().map_err(|e| e.to_string())?;
        let (w, h) = reader.into_dimensions().map_err(|e| format!("undecodable image: {e}"))?;
        crate::model::image::check_image_dimensions(w, h, "embedded image")?;
    }
    Ok(img)
}

pub(crate) fn parse_row(v: &Value, index: usize, instruction: &str) -> std::result::Result<QaRecord, String> {
    let images: Vec<ImageRef> = match first(v, &["images", "image_bytes", "image"]) {
        None => vec![],
        Some((_, Value::Array(a))) => a.iter().map(image_of).collect::<std::result::Result<_, _>>()?,
        Some((_, x)) => vec![image_of(x)?],
    };
    let mut prompt = match first(v, &["prompt", "question", "problem"]) {
        Some((_, Value::String(s))) => s.clone(),
        Some((_, Value::Array(msgs))) => msgs
            .iter()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            .and_then(|m| m.get("content"))
            .and_then(Value::as_str)
            .ok_or("prompt messages hold no user turn")?
            .to_string(),
        _ => return Err("no question/prompt column".into()),
    };
    let truth = first(v, &["correct_answer", "answer", "solution"])
        .map(|(_, x)| x.clone())
        .or_else(|| v.get("reward_model").and_then(|r| r.get("ground_truth")).cloned())
        .ok_or("no answer column (correct_answer / answer / reward_model.ground_truth)")?;
    let truth = match truth {
        Value::String(s) => s,
        other => other.to_string(),
    };
    let options: Option<Vec<String>> = first(v, &["answers", "choices", "options"])
        .and_then(|(_, x)| x.as_array())
        .map(|a| a.iter().map(|o| o.as_str().map(String::from).unwrap_or_else(|| o.to_string())).collect());
    let answer = match &options {
        Some(opts) => {
            let idx = opts
                .iter()
                .position(|o| o.trim() == truth.trim())
                .or_else(|| {
                    (truth.len() == 1)
                        .then(|| (truth.as_bytes()[0] as usize).wrapping_sub(b'A' as usize))
                        .filter(|&i| i < opts.len())
                })
                .ok_or_else(|| format!("answer is not one of the options: {truth:?}"))?;
            let q = McQuestion { kind: String::new(), question: prompt.clone(), options: opts.clone(), answer: idx };
            prompt = q.prompt(instruction);
            q.letter().to_string()
        }
        None => super::formats::answer_of(&truth),
    };
    let placeholders = prompt.matches("<image>").count();
    if placeholders == 0 {
        prompt = format!("{}{prompt}", "<image>".repeat(images.len()));
    } else if placeholders != images.len() {
        return Err(format!("<image> placeholders do not match the images: {placeholders} vs {}", images.len()));
    }
    Ok(QaRecord {
        id: first(v, &["id", "index"])
            .map(|(_, x)| x.as_str().map(String::from).unwrap_or_else(|| x.to_string()))
            .unwrap_or_else(|| format!("row{index}")),
        kind: first(v, &["question_type", "kind", "data_source"])
            .and_then(|(_, x)| x.as_str())
            .unwrap_or("parquet")
            .to_string(),
        system: None,
        prompt,
        images,
        response: answer.clone(),
        answer,
        meta: Value::Null,
    })
}

/// Every row of a parquet file as a JSON object (binary columns as base64, see
/// `to_value`), in file order.
pub fn parquet_rows(path: &Path) -> Result<Vec<Value>> {
    let file = File::open(path).map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
    let bad = |msg: String| Error::Arg { op: "parquet", msg: format!("{}: {msg}", path.display()) };
    // The parquet crate panics on some corrupt metadata ("column start and
    // length should not be negative", found by tests/fuzz_loaders.rs): a panic
    // is an error naming the file, like any other unreadable file.
    let read = std::panic::catch_unwind(move || -> Result<Vec<Value>> {
        let reader = SerializedFileReader::new(file).map_err(|e| bad(format!("not a readable parquet file: {e}")))?;
        let rows = reader.get_row_iter(None).map_err(|e| bad(e.to_string()))?;
        rows.enumerate()
            .map(|(i, row)| {
                let row = row.map_err(|e| bad(format!("row {i}: {e}")))?;
                Ok(Value::Object(row.get_column_iter().map(|(k, f)| (k.clone(), to_value(f, k))).collect()))
            })
            .collect()
    });
    read.unwrap_or_else(|p| {
        let why = crate::error::panic_message(p.as_ref());
        Err(Error::Arg { op: "parquet", msg: format!("{}: not a readable parquet file: {why}", path.display()) })
    })
}

/// Loads spatial multiple-choice QA from a parquet file. `instruction` follows the
/// options when the file gives them as a list. `strict`: the first bad row is an
/// error naming the file and row; otherwise bad rows are counted by reason.
pub fn load_parquet_qa(path: &Path, instruction: &str, strict: bool) -> Result<LoadReport> {
    let bad = |msg: String| Error::Arg { op: "parquet", msg: format!("{}: {msg}", path.display()) };
    let mut report = LoadReport::default();
    for (i, v) in parquet_rows(path)?.into_iter().enumerate() {
        match parse_row(&v, i, instruction) {
            Ok(r) => report.records.push(r),
            Err(reason) if strict => return Err(bad(format!("row {i}: {reason}"))),
            Err(reason) => {
                if report.examples.len() < 5 {
                    report.examples.push(format!("{}: row {i}: {reason}", path.display()));
                }
                let key = reason.split(':').next().unwrap_or(&reason).to_string();
                *report.skipped.entry(key).or_default() += 1;
            }
        }
    }
    Ok(report)
}
