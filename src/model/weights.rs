//! Hugging Face safetensors checkpoints: single file or sharded
//! (`model.safetensors.index.json`), memory-mapped, f32 / bf16 / f16; and saving
//! (atomic: write a temp file, then rename).
//!
//! Names are normalised to the hub layout that released checkpoints use
//! (`visual.*`, `model.*`, `lm_head.weight`): files written by transformers >= 4.52
//! (`model.visual.*`, `model.language_model.*`) load the same way.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::{SafeTensors, View};

use crate::error::{Error, Result};
use crate::tensor::{DType, Device, Tensor};

/// Maps a tensor name from either naming style to the hub style.
pub fn canonical_name(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("model.visual.") {
        format!("visual.{rest}")
    } else if let Some(rest) = name.strip_prefix("model.language_model.") {
        format!("model.{rest}")
    } else {
        name.to_string()
    }
}

fn ckpt_err(file: &Path, msg: impl Into<String>) -> Error {
    Error::Checkpoint { file: file.display().to_string(), msg: msg.into() }
}

/// An opened checkpoint: memory maps of its shard files and where each tensor lives.
pub struct Checkpoint {
    shards: Vec<(PathBuf, Mmap)>,
    /// canonical name -> (shard, name inside the file)
    index: BTreeMap<String, (usize, String)>,
}

impl Checkpoint {
    /// Opens `dir/model.safetensors.index.json` (sharded) or `dir/model.safetensors`,
    /// or `dir` itself when it is a .safetensors file.
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if dir.is_file() {
            vec![dir.to_path_buf()]
        } else if index_path.is_file() {
            let text = std::fs::read_to_string(&index_path)
                .map_err(|e| Error::Io { path: index_path.display().to_string(), source: e })?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| ckpt_err(&index_path, format!("not valid JSON: {e}")))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ckpt_err(&index_path, "no weight_map object"))?;
            let mut names: Vec<String> = map.values().filter_map(|f| f.as_str().map(String::from)).collect();
            names.sort();
            names.dedup();
            names.into_iter().map(|f| dir.join(f)).collect()
        } else if dir.join("model.safetensors").is_file() {
            vec![dir.join("model.safetensors")]
        } else {
            return Err(ckpt_err(dir, "no model.safetensors or model.safetensors.index.json here"));
        };
        let mut shards: Vec<(PathBuf, Mmap)> = Vec::new();
        let mut index = BTreeMap::new();
        for path in files {
            let file = File::open(&path).map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
            // SAFETY: the map is read-only; a checkpoint changed underneath a running
            // process is outside what we can defend against (as with every mmap loader).
            let mmap =
                unsafe { Mmap::map(&file) }.map_err(|e| Error::Io { path: path.display().to_string(), source: e })?;
            let st = SafeTensors::deserialize(&mmap).map_err(|e| {
                let which = header_problem(&mmap).map(|p| format!(" ({p})")).unwrap_or_default();
                ckpt_err(&path, format!("corrupt or truncated safetensors file: {e}{which}"))
            })?;
            for name in st.names() {
                let canon = canonical_name(name);
                if let Some((other, _)) = index.insert(canon.clone(), (shards.len(), name.to_string())) {
                    let other = if other == shards.len() { &path } else { &shards[other].0 };
                    return Err(ckpt_err(&path, format!("tensor {canon} appears twice (also in {})", other.display())));
                }
            }
            shards.push((path, mmap));
        }
        Ok(Checkpoint { shards, index })
    }

    /// Canonical names of all tensors, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Shape of a tensor without reading it.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        Ok(self.view(name)?.1.shape().to_vec())
    }

    fn view(&self, name: &str) -> Result<(&Path, TensorView<'_>)> {
        let (shard, inner) = self.index.get(name).ok_or_else(|| Error::Checkpoint {
            file: self.shards.first().map(|s| s.0.display().to_string()).unwrap_or_default(),
            msg: format!("no tensor named {name}"),
        })?;
        let (path, mmap) = &self.shards[*shard];
        let st = SafeTensors::deserialize(mmap).map_err(|e| ckpt_err(path, e.to_string()))?;
        let view = st.tensor(inner).map_err(|e| ckpt_err(path, format!("{inner}: {e}")))?;
        Ok((path, view))
    }

    /// Reads a tensor: f32 stays f32, bf16 stays bf16 (ops upcast on read), f16 is
    /// widened to f32. Other dtypes are an error naming the tensor.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let (path, view) = self.view(name)?;
        let shape = view.shape().to_vec();
        let bytes = view.data();
        match view.dtype() {
            Dtype::F32 => Tensor::from_f32(bytemuck::pod_collect_to_vec(bytes), shape, Device::Cpu),
            Dtype::BF16 => Tensor::from_bf16(bytemuck::pod_collect_to_vec::<u8, bf16>(bytes), shape, Device::Cpu),
            Dtype::F16 => {
                let h: Vec<f16> = bytemuck::pod_collect_to_vec(bytes);
                Tensor::from_f32(h.iter().map(|x| x.to_f32()).collect(), shape, Device::Cpu)
            }
            Dtype::I64 => {
                let v: Vec<i64> = bytemuck::pod_collect_to_vec(bytes);
                let v: Vec<i32> = v
                    .iter()
                    .map(|&x| {
                        i32::try_from(x).map_err(|_| ckpt_err(path, format!("{name}: value {x} does not fit in i32")))
                    })
                    .collect::<Result<_>>()?;
                Tensor::from_i32(v, shape, Device::Cpu)
            }
            Dtype::I32 => Tensor::from_i32(bytemuck::pod_collect_to_vec(bytes), shape, Device::Cpu),
            other => {
                Err(ckpt_err(path, format!("{name}: dtype {other:?} is not supported (f32, bf16, f16, i32, i64)")))
            }
        }
    }
}

/// A tensor borrowed for writing.
struct OutTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &OutTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Writes `tensors` to `path` as safetensors, converting float tensors to `dtype`
/// (F32 or BF16). Atomic: a crash leaves either the old file or the new one.
pub fn save_safetensors(
    path: &Path,
    tensors: &[(String, &Tensor)],
    dtype: DType,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let mut out = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let (st_dtype, bytes) = match (t.dtype(), dtype) {
            (DType::I32, _) => (Dtype::I32, bytemuck::cast_slice(&t.to_vec_i32()?).to_vec()),
            (_, DType::BF16) => {
                let v: Vec<bf16> =
                    t.to_dtype(DType::BF16)?.copy()?.to_vec_f32()?.iter().map(|&x| bf16::from_f32(x)).collect();
                (Dtype::BF16, bytemuck::cast_slice(&v).to_vec())
            }
            _ => (Dtype::F32, bytemuck::cast_slice(&t.to_vec_f32()?).to_vec()),
        };
        out.push((name.clone(), OutTensor { dtype: st_dtype, shape: t.dims().to_vec(), bytes }));
    }
    let views: Vec<(String, &OutTensor)> = out.iter().map(|(n, t)| (n.clone(), t)).collect();
    let data = safetensors::serialize(views, metadata).map_err(|e| ckpt_err(path, format!("cannot serialise: {e}")))?;
    write_atomic(path, &data)
}

pub use crate::util::write_atomic;

/// The first tensor whose header entry cannot be right, named, when the
/// safetensors crate refuses a file without saying which (its messages like
/// "invalid shape, data type, or offset for tensor" carry no name).
fn header_problem(bytes: &[u8]) -> Option<String> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header: serde_json::Value = serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    let data_len = (bytes.len() - 8 - n) as u64;
    let mut entries: Vec<(String, u64, u64)> = Vec::new();
    for (name, v) in header.as_object()? {
        if name == "__metadata__" {
            continue;
        }
        let size = match v["dtype"].as_str() {
            Some("F64" | "I64" | "U64") => 8,
            Some("F32" | "I32" | "U32") => 4,
            Some("F16" | "BF16" | "I16" | "U16") => 2,
            Some("I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2") => 1,
            other => return Some(format!("tensor {name}: unknown dtype {other:?}")),
        };
        let shape: Option<Vec<u64>> = v["shape"].as_array().and_then(|a| a.iter().map(|x| x.as_u64()).collect());
        let Some(shape) = shape else {
            return Some(format!("tensor {name}: shape {} is not a list of sizes", v["shape"]));
        };
        let offs: Option<Vec<u64>> = v["data_offsets"].as_array().and_then(|a| a.iter().map(|x| x.as_u64()).collect());
        let Some([start, end]) = offs.as_deref().and_then(|o| <[u64; 2]>::try_from(o).ok()) else {
            return Some(format!("tensor {name}: data_offsets {} are not two offsets", v["data_offsets"]));
        };
        let need = shape.iter().try_fold(size, |a: u64, &d| a.checked_mul(d));
        if end < start || need != Some(end - start) {
            return Some(format!(
                "tensor {name}: shape {shape:?} of {} needs {} bytes, data_offsets [{start}, {end}] hold {}",
                v["dtype"].as_str().unwrap_or("?"),
                need.map_or("more than 2^64".to_string(), |b| b.to_string()),
                end as i128 - start as i128
            ));
        }
        if end > data_len {
            return Some(format!("tensor {name}: data_offsets [{start}, {end}] run past the data ({data_len} bytes)"));
        }
        entries.push((name.clone(), start, end));
    }
    entries.sort_by_key(|e| e.1);
    let mut at = 0;
    for (name, start, end) in &entries {
        if *start != at {
            return Some(format!("tensor {name}: starts at byte {start}, the previous tensor ends at {at}"));
        }
        at = *end;
    }
    (at != data_len).then(|| format!("the tensors end at byte {at}, the data holds {data_len}"))
}

/// The PEFT name of a parameter of this crate's model (transformers >= 4.52 module
/// paths: `model.language_model.*`, `model.visual.*`).
pub fn peft_key(name: &str) -> String {
    let module = if let Some(rest) = name.strip_prefix("visual.") {
        format!("model.visual.{rest}")
    } else if let Some(rest) = name.strip_prefix("model.") {
        format!("model.language_model.{rest}")
    } else {
        name.to_string()
    };
    format!("base_model.model.{module}")
}
