//! Benchmark files as streams of rows, so a file of any size is read with
//! memory bounded by one row (TSV, JSON lines) or one row group (parquet).
//!
//! VLMEvalKit TSVs store an image once and let other rows name the row `index`
//! that holds it (its circular files do this for every copy of a question). A
//! first pass over the file records where each row holding an image starts;
//! a row naming another row's index gets that row's whole `image` cell (one
//! image, or the JSON list of a multi-image row) read back from its offset.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::reader::RowIter;
use serde_json::Value;

use crate::error::{Error, Result};

/// Where a row is in its file: a line (text files; a TSV's header is line 1)
/// or a 0-based row index (parquet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowAt {
    Line(usize),
    Row(usize),
}

impl fmt::Display for RowAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowAt::Line(n) => write!(f, "line {n}"),
            RowAt::Row(n) => write!(f, "row {n}"),
        }
    }
}

/// One row as a JSON object, or why it could not be read as one.
pub struct RawRow {
    pub at: RowAt,
    pub value: std::result::Result<Value, String>,
}

/// The rows of one file.
pub enum Rows {
    Tsv(Box<TsvRows>),
    Parquet(ParquetRows),
    JsonLines { path: PathBuf, lines: std::io::Lines<BufReader<File>>, line: usize, total: usize },
    JsonArray { rows: std::vec::IntoIter<Value>, i: usize, total: usize },
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Io { path: path.display().to_string(), source: e }
}

impl Rows {
    /// Opens `path` by its extension: `.tsv`, `.parquet`, else JSON (an array)
    /// or JSON lines.
    pub fn open(path: &Path) -> Result<Rows> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        match ext.as_str() {
            "tsv" => Ok(Rows::Tsv(Box::new(TsvRows::open(path)?))),
            "parquet" => Ok(Rows::Parquet(ParquetRows::open(path)?)),
            _ => {
                let mut reader = BufReader::new(File::open(path).map_err(io_err(path))?);
                let buf = reader.fill_buf().map_err(io_err(path))?;
                if buf.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
                    // A JSON array is parsed whole: such files hold paths, not images.
                    let mut text = String::new();
                    reader.read_to_string(&mut text).map_err(io_err(path))?;
                    let v: Value = serde_json::from_str(&text).map_err(|e| Error::Arg {
                        op: "benchmark",
                        msg: format!("{}:{}: invalid JSON: {e}", path.display(), e.line()),
                    })?;
                    let Value::Array(rows) = v else {
                        return Err(Error::Arg {
                            op: "benchmark",
                            msg: format!("{}: not a JSON array", path.display()),
                        });
                    };
                    let total = rows.len();
                    return Ok(Rows::JsonArray { rows: rows.into_iter(), i: 0, total });
                }
                let mut total = 0;
                let mut counter = BufReader::new(File::open(path).map_err(io_err(path))?);
                let mut line = Vec::new();
                while counter.read_until(b'\n', &mut line).map_err(io_err(path))? > 0 {
                    total += usize::from(line.iter().any(|b| !b.is_ascii_whitespace()));
                    line.clear();
                }
                Ok(Rows::JsonLines { path: path.to_path_buf(), lines: reader.lines(), line: 0, total })
            }
        }
    }

    /// Rows in the file (for progress).
    pub fn total(&self) -> usize {
        match self {
            Rows::Tsv(t) => t.total,
            Rows::Parquet(p) => p.total,
            Rows::JsonLines { total, .. } | Rows::JsonArray { total, .. } => *total,
        }
    }

    /// A VLMEvalKit circular file (copies at `index + k·1e6`).
    pub fn circular(&self) -> bool {
        matches!(self, Rows::Tsv(t) if t.circular)
    }

    /// The next row; `Err` only when the file itself cannot be read on.
    pub fn next_row(&mut self) -> Option<Result<RawRow>> {
        match self {
            Rows::Tsv(t) => t.next_row(),
            Rows::Parquet(p) => p.next_row(),
            Rows::JsonArray { rows, i, .. } => {
                let v = rows.next()?;
                *i += 1;
                Some(Ok(RawRow { at: RowAt::Line(*i), value: Ok(v) }))
            }
            Rows::JsonLines { path, lines, line, .. } => loop {
                let text = match lines.next()? {
                    Ok(t) => t,
                    Err(e) => return Some(Err(io_err(path)(e))),
                };
                *line += 1;
                if text.trim().is_empty() {
                    continue;
                }
                let value = serde_json::from_str(&text).map_err(|e| format!("invalid JSON: {e}"));
                return Some(Ok(RawRow { at: RowAt::Line(*line), value }));
            },
        }
    }
}

/// A VLMEvalKit TSV (tab-separated, a header row, pandas quoting), row by row.
pub struct TsvRows {
    path: PathBuf,
    reader: csv::Reader<File>,
    header: Vec<String>,
    image_col: Option<usize>,
    /// Row `index` -> where that row starts, for rows holding an image.
    image_rows: HashMap<String, csv::Position>,
    /// Reads referenced rows back (opened on first use).
    seeker: Option<csv::Reader<File>>,
    /// The last referenced cell: copies of a question often follow each other.
    last_ref: Option<(String, String)>,
    total: usize,
    circular: bool,
}

/// A cell this short names another row's index rather than holding an image.
const MAX_REF_LEN: usize = 64;

fn tsv_builder() -> csv::ReaderBuilder {
    let mut b = csv::ReaderBuilder::new();
    b.delimiter(b'\t').flexible(false);
    b
}

impl TsvRows {
    fn open(path: &Path) -> Result<TsvRows> {
        let bad = |e: csv::Error| Error::Arg { op: "tsv", msg: format!("{}: {e}", path.display()) };
        let mut scan = tsv_builder().from_reader(File::open(path).map_err(io_err(path))?);
        let header: Vec<String> = scan.headers().map_err(bad)?.iter().map(String::from).collect();
        let col = |name: &str| header.iter().position(|h| h == name);
        let (index_col, image_col) = (col("index"), col("image"));
        let mut image_rows = HashMap::new();
        let (mut total, mut circular) = (0, col("g_index").is_some());
        let mut rec = csv::ByteRecord::new();
        loop {
            let pos = scan.position().clone();
            match scan.read_byte_record(&mut rec) {
                Ok(false) => break,
                Ok(true) => {
                    total += 1;
                    if let Some(i) = index_col {
                        let index = String::from_utf8_lossy(rec.get(i).unwrap_or_default()).into_owned();
                        circular |= index.trim().parse::<u64>().is_ok_and(|i| i >= 1_000_000);
                        if image_col.and_then(|c| rec.get(c)).is_some_and(|cell| cell.len() > MAX_REF_LEN) {
                            image_rows.insert(index, pos);
                        }
                    }
                }
                // A malformed row (wrong field count) is reported when read; an
                // I/O error ends the scan and is reported by the second pass.
                Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => break,
                Err(_) => total += 1,
            }
        }
        let reader = tsv_builder().from_reader(File::open(path).map_err(io_err(path))?);
        Ok(TsvRows {
            path: path.to_path_buf(),
            reader,
            header,
            image_col,
            image_rows,
            seeker: None,
            last_ref: None,
            total,
            circular,
        })
    }

    fn next_row(&mut self) -> Option<Result<RawRow>> {
        let mut rec = csv::StringRecord::new();
        let line = self.reader.position().line() as usize;
        let value = match self.reader.read_record(&mut rec) {
            Ok(false) => return None,
            Ok(true) => Ok(self.row_value(&rec)),
            Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => {
                return Some(Err(Error::Arg { op: "tsv", msg: format!("{}: {e}", self.path.display()) }));
            }
            Err(e) => Err(match e.kind() {
                csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                    format!("{len} fields where the header has {expected_len} (a truncated or damaged row)")
                }
                _ => format!("unreadable TSV row: {e}"),
            }),
        };
        let at = RowAt::Line(rec.position().map_or(line, |p| p.line() as usize));
        Some(Ok(RawRow { at, value: value.and_then(|v| self.resolve_image(v)) }))
    }

    fn row_value(&self, rec: &csv::StringRecord) -> Value {
        Value::Object(
            self.header
                .iter()
                .zip(rec.iter())
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.clone(), Value::String(v.to_string())))
                .collect(),
        )
    }

    /// Replaces an `image` cell naming another row's index by that row's cell.
    fn resolve_image(&mut self, mut v: Value) -> std::result::Result<Value, String> {
        let Some(cell) = v.get("image").and_then(Value::as_str).filter(|c| c.len() <= MAX_REF_LEN) else {
            return Ok(v);
        };
        let key = cell.trim().to_string();
        let Some(pos) = self.image_rows.get(&key).cloned() else {
            return Ok(v); // not a reference: the layout reports the cell
        };
        let resolved = match &self.last_ref {
            Some((k, c)) if *k == key => c.clone(),
            _ => {
                let seeker = match &mut self.seeker {
                    Some(s) => s,
                    None => {
                        let f = File::open(&self.path).map_err(|e| format!("cannot reopen the file: {e}"))?;
                        self.seeker.insert(tsv_builder().has_headers(false).from_reader(f))
                    }
                };
                seeker.seek(pos).map_err(|e| format!("column image: row index {key}: {e}"))?;
                let mut rec = csv::StringRecord::new();
                seeker.read_record(&mut rec).map_err(|e| format!("column image: row index {key}: {e}"))?;
                let c = self.image_col.and_then(|i| rec.get(i)).unwrap_or_default().to_string();
                self.last_ref = Some((key.clone(), c.clone()));
                c
            }
        };
        v["image_of_index"] = Value::String(key);
        v["image"] = Value::String(resolved);
        Ok(v)
    }
}

/// A parquet file, read one row group at a time by the parquet crate's record
/// API.
pub struct ParquetRows {
    path: PathBuf,
    iter: RowIter<'static>,
    i: usize,
    total: usize,
}

impl ParquetRows {
    fn open(path: &Path) -> Result<ParquetRows> {
        let file = File::open(path).map_err(io_err(path))?;
        let bad = |msg: String| Error::Arg { op: "parquet", msg: format!("{}: {msg}", path.display()) };
        // The parquet crate panics on some corrupt metadata (found by
        // tests/fuzz_loaders.rs): a panic is an error naming the file.
        let opened = std::panic::catch_unwind(move || SerializedFileReader::new(file))
            .map_err(|p| bad(format!("not a readable parquet file: {}", crate::error::panic_message(p.as_ref()))))?
            .map_err(|e| bad(format!("not a readable parquet file: {e}")))?;
        let total = opened.metadata().file_metadata().num_rows().max(0) as usize;
        Ok(ParquetRows { path: path.to_path_buf(), iter: RowIter::from_file_into(Box::new(opened)), i: 0, total })
    }

    fn next_row(&mut self) -> Option<Result<RawRow>> {
        let bad = |msg: String| Error::Arg { op: "parquet", msg: format!("{}: {msg}", self.path.display()) };
        let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.iter.next()));
        let row = match next {
            Err(p) => {
                return Some(Err(bad(format!(
                    "row {}: not readable: {}",
                    self.i,
                    crate::error::panic_message(p.as_ref())
                ))));
            }
            Ok(None) => return None,
            Ok(Some(Err(e))) => return Some(Err(bad(format!("row {}: {e}", self.i)))),
            Ok(Some(Ok(row))) => row,
        };
        let at = RowAt::Row(self.i);
        self.i += 1;
        let value = Value::Object(
            row.get_column_iter().map(|(k, f)| (k.clone(), super::super::parquet::to_value(f, k))).collect(),
        );
        Some(Ok(RawRow { at, value: Ok(value) }))
    }
}
