//! Training scalars as TensorBoard event files (`<stage>/tb/events.out.tfevents.*`),
//! so `tensorboard --logdir runs/NAME` shows the curves people already read.
//!
//! The format, written by hand (a few protobuf fields): a TFRecord stream —
//! per record, the length (u64 LE), its masked CRC-32C, the bytes, their masked
//! CRC-32C — of `Event` messages: the first holds `file_version`
//! ("brain.Event:2"), then one per step with a `Summary` of
//! `(tag, simple_value)` pairs. A resumed run opens a new file whose first
//! event after the version is `SessionLog::START` at the first step it logs:
//! TensorBoard then drops the killed run's points from there on.
//! `tools/check_tensorboard.py` reads the files back with the `tensorboard`
//! package.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};

/// Appends events to one file of a `tb/` directory.
pub struct TbWriter {
    file: File,
    path: PathBuf,
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field (wire type 2).
fn bytes_field(field: u32, data: &[u8], out: &mut Vec<u8>) {
    varint(((field << 3) | 2) as u64, out);
    varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

/// An `Event` with its wall time and step, then `body` (already encoded fields).
fn event(wall_time: f64, step: i64, body: &[u8]) -> Vec<u8> {
    let mut e = Vec::new();
    e.push((1 << 3) | 1); // wall_time: double
    e.extend_from_slice(&wall_time.to_le_bytes());
    varint(2 << 3, &mut e); // step: int64
    varint(step as u64, &mut e);
    e.extend_from_slice(body);
    e
}

fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c::crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl TbWriter {
    /// A new event file in `dir` (created); `resumed_at` marks a resumed run,
    /// whose killed predecessor's points after that step TensorBoard discards.
    pub fn create(dir: &Path, resumed_at: Option<usize>) -> Result<TbWriter> {
        std::fs::create_dir_all(dir).map_err(crate::util::io_err(dir))?;
        let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        let host = if host.is_empty() { "actial".to_string() } else { host };
        let t = now();
        // TensorBoard reads a directory's files in name order: the time (down
        // to the microsecond) orders a resumed run's file after the first's.
        let (secs, micros) = (t as u64, ((t.fract()) * 1e6) as u64);
        let path = (0..)
            .map(|n| dir.join(format!("events.out.tfevents.{secs}.{host}.{micros:06}.{}.{n}", std::process::id())))
            .find(|p| !p.exists())
            .expect("a free name");
        let file = File::create(&path).map_err(crate::util::io_err(&path))?;
        let mut w = TbWriter { file, path };
        let mut version = Vec::new();
        bytes_field(3, b"brain.Event:2", &mut version);
        w.record(&event(now(), 0, &version))?;
        if let Some(step) = resumed_at {
            let mut log = Vec::new();
            varint(1 << 3, &mut log); // status
            varint(1, &mut log); // START
            let mut body = Vec::new();
            bytes_field(7, &log, &mut body); // session_log
            // TensorBoard keeps the points before the START step: the resumed
            // step itself was logged before the kill and is not logged again.
            w.record(&event(now(), step as i64 + 1, &body))?;
        }
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut rec = Vec::with_capacity(data.len() + 16);
        rec.extend_from_slice(&len);
        rec.extend_from_slice(&masked_crc(&len).to_le_bytes());
        rec.extend_from_slice(data);
        rec.extend_from_slice(&masked_crc(data).to_le_bytes());
        self.file.write_all(&rec).map_err(crate::util::io_err(&self.path))?;
        self.file.flush().map_err(crate::util::io_err(&self.path))
    }

    /// One step's scalars, tagged `prefix/name`.
    pub fn scalars(&mut self, step: usize, prefix: &str, values: &[(String, f64)]) -> Result<()> {
        let mut summary = Vec::new();
        for (tag, v) in values {
            let mut value = Vec::new();
            bytes_field(1, format!("{prefix}/{tag}").as_bytes(), &mut value);
            value.push((2 << 3) | 5); // simple_value: float
            value.extend_from_slice(&(*v as f32).to_le_bytes());
            bytes_field(1, &value, &mut summary);
        }
        let mut body = Vec::new();
        bytes_field(5, &summary, &mut body);
        self.record(&event(now(), step as i64, &body))
    }

    /// Every finite number of a metrics line (nested objects as `a/b`), but
    /// `step` itself.
    pub fn json_scalars(&mut self, step: usize, prefix: &str, line: &Value) -> Result<()> {
        let mut out = Vec::new();
        flatten("", line, &mut out);
        out.retain(|(k, v)| k != "step" && v.is_finite());
        self.scalars(step, prefix, &out)
    }
}

fn flatten(key: &str, v: &Value, out: &mut Vec<(String, f64)>) {
    match v {
        Value::Number(n) => out.extend(n.as_f64().map(|x| (key.to_string(), x))),
        Value::Bool(b) => out.push((key.to_string(), f64::from(u8::from(*b)))),
        Value::Object(o) => {
            for (k, x) in o {
                let name = if key.is_empty() { k.clone() } else { format!("{key}/{k}") };
                flatten(&name, x, out);
            }
        }
        _ => {}
    }
}

/// The records of an event file, CRCs checked (tests and tools).
pub fn read_records(path: &Path) -> Result<Vec<Vec<u8>>> {
    let data = std::fs::read(path).map_err(crate::util::io_err(path))?;
    let bad = |msg: String| Error::Arg { op: "tensorboard", msg: format!("{}: {msg}", path.display()) };
    let (mut at, mut out) = (0, Vec::new());
    while at < data.len() {
        let head = data.get(at..at + 12).ok_or_else(|| bad(format!("truncated record at byte {at}")))?;
        let len = u64::from_le_bytes(head[..8].try_into().expect("8 bytes")) as usize;
        if u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")) != masked_crc(&head[..8]) {
            return Err(bad(format!("length CRC mismatch at byte {at}")));
        }
        let body = data.get(at + 12..at + 12 + len).ok_or_else(|| bad(format!("truncated record at byte {at}")))?;
        let crc =
            data.get(at + 12 + len..at + 16 + len).ok_or_else(|| bad(format!("truncated record at byte {at}")))?;
        if u32::from_le_bytes(crc.try_into().expect("4 bytes")) != masked_crc(body) {
            return Err(bad(format!("data CRC mismatch at byte {at}")));
        }
        out.push(body.to_vec());
        at += 16 + len;
    }
    Ok(out)
}
