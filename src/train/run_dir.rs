//! A run directory owns its identity: `run.json` records the run id and a
//! fingerprint of everything that determines the result (the settings that
//! change what is trained, the data files' and the model's hashes). A fresh
//! run refuses a directory that holds another run's checkpoints, a resume
//! refuses changed settings or data, unless the user asks to `--overwrite`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::config::SftConfig;
use super::optimizer::checkpoints_in;
use crate::error::{Error, Result};

/// The file in a run directory that names its run.
pub const RUN_FILE: &str = "run.json";

/// Keys a resume may change, left out of the fingerprint: where and how fast a
/// run goes, and how long (extending a run's steps continues it).
const NOT_RESULTS: [&str; 11] = [
    "run.steps",
    "run.epochs",
    "grpo.steps",
    "run.out_dir",
    "run.device",
    "run.save_every",
    "run.keep_last",
    "run.recompute_all",
    "run.recompute_text_layers",
    "run.recompute_vision_blocks",
    "grpo.save_every",
];

/// What `run.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// A short id, fixed when the run starts.
    pub run_id: String,
    pub recipe: String,
    /// sha256 of `settings` and `inputs`.
    pub fingerprint: String,
    /// The configuration without the keys that do not change the result.
    pub settings: Value,
    /// Every input file by path: its sha256 (weights files: of their header and
    /// length, which name every tensor's dtype, shape and place).
    pub inputs: BTreeMap<String, String>,
}

impl RunRecord {
    /// The record of a run of `recipe` with `cfg`, hashing its data files and
    /// its model directory (when `model.path` is one).
    pub fn new(recipe: &str, cfg: &SftConfig) -> Result<RunRecord> {
        let mut settings = serde_json::to_value(cfg).expect("the config serialises");
        for key in NOT_RESULTS {
            let (section, name) = key.split_once('.').expect("section.key");
            if let Some(t) = settings.get_mut(section).and_then(Value::as_object_mut) {
                t.remove(name);
            }
        }
        let mut inputs = BTreeMap::new();
        for f in cfg.data.train.iter().chain(&cfg.grpo.data) {
            inputs.insert(f.clone(), hash_file(Path::new(f))?);
        }
        let model = Path::new(&cfg.model.path);
        if model.is_dir() {
            for e in std::fs::read_dir(model).map_err(|e| io(model, e))?.flatten() {
                let p = e.path();
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
                let h = if name.ends_with(".safetensors") {
                    hash_safetensors_header(&p)?
                } else if name.ends_with(".json") || name.ends_with(".txt") || name.ends_with(".model") {
                    hash_file(&p)?
                } else {
                    continue;
                };
                inputs.insert(p.display().to_string(), h);
            }
        }
        let mut h = Sha256::new();
        h.update(recipe.as_bytes());
        h.update(serde_json::to_string(&settings).expect("JSON").as_bytes());
        for (k, v) in &inputs {
            h.update(k.as_bytes());
            h.update(v.as_bytes());
        }
        let fingerprint = hex(&h.finalize());
        let run_id = format!(
            "{}-{}",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            &fingerprint[..8]
        );
        Ok(RunRecord { run_id, recipe: recipe.into(), fingerprint, settings, inputs })
    }

    /// The settings and inputs that differ from `other`, one line each.
    pub fn differences(&self, other: &RunRecord) -> Vec<String> {
        let mut out = Vec::new();
        if self.recipe != other.recipe {
            out.push(format!("recipe: {} -> {}", other.recipe, self.recipe));
        }
        diff_json("", &other.settings, &self.settings, &mut out);
        for (k, v) in &other.inputs {
            match self.inputs.get(k) {
                None => out.push(format!("input {k}: no longer used")),
                Some(w) if w != v => out.push(format!("input {k}: its contents changed")),
                _ => {}
            }
        }
        for k in self.inputs.keys().filter(|k| !other.inputs.contains_key(*k)) {
            out.push(format!("input {k}: new"));
        }
        out
    }
}

fn io(p: &Path, e: std::io::Error) -> Error {
    Error::Io { path: p.display().to_string(), source: e }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of a whole file, streamed.
pub fn hash_file(p: &Path) -> Result<String> {
    hash_file_prefix(p, u64::MAX)
}

/// sha256 of a file's first `bytes` bytes (all of it when shorter): whether a
/// file is a longer copy of one hashed before (a download that was cut short).
pub fn hash_file_prefix(p: &Path, bytes: u64) -> Result<String> {
    let mut f = std::io::Read::take(std::fs::File::open(p).map_err(|e| io(p, e))?, bytes);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| io(p, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// sha256 of an input: a file's contents; a directory's file names and sizes,
/// recursively (a benchmark released as folders of parquet shards or images).
pub fn hash_input(p: &Path) -> Result<String> {
    if !p.is_dir() {
        return hash_file(p);
    }
    let mut files = Vec::new();
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| io(&d, e))?.flatten() {
            let q = e.path();
            if q.is_dir() {
                stack.push(q);
            } else {
                let len = e.metadata().map_err(|e| io(&q, e))?.len();
                files.push((q.strip_prefix(p).unwrap_or(&q).display().to_string(), len));
            }
        }
    }
    files.sort();
    let mut h = Sha256::new();
    for (name, len) in files {
        h.update(name.as_bytes());
        h.update(len.to_le_bytes());
    }
    Ok(hex(&h.finalize()))
}

/// sha256 of a safetensors file's length and header (hashing 15 GB of weights
/// on every start would cost more than it tells).
fn hash_safetensors_header(p: &Path) -> Result<String> {
    let mut f = std::fs::File::open(p).map_err(|e| io(p, e))?;
    let len = f.metadata().map_err(|e| io(p, e))?.len();
    let mut n = [0u8; 8];
    let mut h = Sha256::new();
    h.update(len.to_le_bytes());
    if f.read_exact(&mut n).is_ok() {
        let header_len = u64::from_le_bytes(n).min(len.saturating_sub(8)).min(100 << 20);
        let mut header = vec![0u8; header_len as usize];
        f.read_exact(&mut header).map_err(|e| io(p, e))?;
        h.update(&header);
    }
    Ok(hex(&h.finalize()))
}

fn diff_json(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                diff_json(&p, a.get(k).unwrap_or(&Value::Null), b.get(k).unwrap_or(&Value::Null), out);
            }
        }
        // Floats read back from run.json may differ in the last bit.
        (Value::Number(a), Value::Number(b))
            if a.as_f64().zip(b.as_f64()).is_some_and(|(a, b)| (a - b).abs() <= 1e-12 * a.abs().max(b.abs())) => {}
        _ if old != new => out.push(format!("{path}: {old} -> {new}")),
        _ => {}
    }
}

/// Every checkpoint of the run in `out` (its own and its stages' `sft/`,
/// `grpo/`), by directory.
fn run_checkpoints(out: &Path) -> Result<Vec<PathBuf>> {
    let mut all = Vec::new();
    for dir in [out.to_path_buf(), out.join("sft"), out.join("grpo")] {
        all.extend(checkpoints_in(&dir)?.into_iter().map(|(_, p)| p));
    }
    Ok(all)
}

/// How a run takes its directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// A new run: the directory must hold no other run's checkpoints.
    Fresh,
    /// `--resume`: the directory's run must be this one (same fingerprint).
    Resume,
    /// `--overwrite`: the directory's checkpoints, metrics and record go first.
    Overwrite,
}

/// Takes `out` for the run `rec` as `how` says, writing `out/run.json`.
/// Refusals name the directory, its run and what differs.
pub fn claim(out: &Path, rec: &RunRecord, how: Claim) -> Result<RunRecord> {
    let err = |msg: String| crate::arg_err!("run directory", "{}: {msg}", out.display());
    let path = out.join(RUN_FILE);
    let existing: Option<RunRecord> = match std::fs::read_to_string(&path) {
        Ok(text) => Some(serde_json::from_str(&text).map_err(|e| Error::Config {
            file: path.display().to_string(),
            msg: format!("not a run record ({e}); move it away or pass --overwrite"),
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(&path, e)),
    };
    let ckpts = run_checkpoints(out)?;
    let mut record = rec.clone();
    match how {
        Claim::Overwrite => {
            for c in &ckpts {
                std::fs::remove_dir_all(c).map_err(|e| io(c, e))?;
            }
            for f in ["metrics.jsonl", "sft/metrics.jsonl", "grpo/metrics.jsonl"] {
                let p = out.join(f);
                if p.exists() {
                    std::fs::remove_file(&p).map_err(|e| io(&p, e))?;
                }
            }
            // The old run's TensorBoard curves would show next to the new ones.
            for d in ["tb", "sft/tb", "grpo/tb"] {
                let p = out.join(d);
                if p.is_dir() {
                    std::fs::remove_dir_all(&p).map_err(|e| io(&p, e))?;
                }
            }
        }
        Claim::Resume => match &existing {
            Some(old) if old.fingerprint != rec.fingerprint => {
                let d = rec.differences(old);
                return Err(err(format!(
                    "this resume would change the run it continues ({}):\n  {}\nresume with the run's settings, or start a new run (another --out, or --overwrite)",
                    old.run_id,
                    d.join("\n  ")
                )));
            }
            // The same run keeps its id.
            Some(old) => record.run_id = old.run_id.clone(),
            // A directory from before run records: adopted as it is.
            None => {}
        },
        Claim::Fresh => {
            if let Some(last) = ckpts.last() {
                let whose = match &existing {
                    Some(old) if old.fingerprint == rec.fingerprint => {
                        format!("this run's checkpoints ({})", old.run_id)
                    }
                    Some(old) => format!("the checkpoints of another run ({}, {})", old.run_id, old.recipe),
                    None => "checkpoints of an earlier run".to_string(),
                };
                return Err(err(format!(
                    "it holds {whose}, {} of them, the last {}; continue it with --resume {}, or pass --overwrite to replace it, or choose another --out",
                    ckpts.len(),
                    last.display(),
                    out.display()
                )));
            }
        }
    }
    std::fs::create_dir_all(out).map_err(|e| io(out, e))?;
    crate::model::weights::write_atomic(&path, serde_json::to_string_pretty(&record).expect("JSON").as_bytes())?;
    Ok(record)
}
