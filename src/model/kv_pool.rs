//! The paged KV cache of grouped rollouts: per layer, a key pool and a value
//! pool of fixed-size blocks (`[blocks · block_size, Hkv, D]`, allocated once),
//! one block numbering shared by every layer, a free list, and the block
//! tables that map a sequence's key `r` to its pool row
//! (`ops::paged`). A prompt's prefix is stored once and referenced by all its
//! samples; each sample's suffix takes a block every `block_size` tokens and
//! gives its blocks back when it finishes, so the pool's size is set by the
//! samples in flight, not by all the samples of a step.

use super::config::TextConfig;
use super::text::kv_dtype;
use crate::arg_err;
use crate::error::Result;
use crate::ops::BlockTable;
use crate::tensor::{Device, Tensor};

/// Key rows per block: a decode tile (32 keys) spans two blocks.
pub const KV_BLOCK_SIZE: usize = 16;

/// How a pool is sized: `group_slots` prompts and `sample_slots` samples in
/// flight, prompts of at most `max_prefix_tokens`, samples of at most
/// `max_suffix_tokens`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvPoolSpec {
    pub block_size: usize,
    pub group_slots: usize,
    pub sample_slots: usize,
    pub max_prefix_tokens: usize,
    pub max_suffix_tokens: usize,
}

impl KvPoolSpec {
    pub fn prefix_blocks(&self) -> usize {
        self.max_prefix_tokens.div_ceil(self.block_size).max(1)
    }
    pub fn suffix_blocks(&self) -> usize {
        self.max_suffix_tokens.div_ceil(self.block_size).max(1)
    }
    /// Blocks enough for every slot at its longest.
    pub fn blocks(&self) -> usize {
        self.group_slots * self.prefix_blocks() + self.sample_slots * self.suffix_blocks()
    }
    /// Device bytes of the pools (keys and values, every layer).
    pub fn bytes(&self, cfg: &TextConfig, device: Device) -> u64 {
        let row = (cfg.num_key_value_heads * cfg.head_dim() * kv_dtype(device).size_in_bytes()) as u64;
        2 * cfg.num_hidden_layers as u64 * (self.blocks() * self.block_size) as u64 * row
    }
}

pub struct KvPool {
    pub spec: KvPoolSpec,
    /// `(keys, values)` per layer.
    pub layers: Vec<(Tensor, Tensor)>,
    /// Prefix blocks per group slot, suffix blocks per sample slot.
    pub prefix: BlockTable,
    pub suffix: BlockTable,
    free: Vec<u32>,
}

impl KvPool {
    pub fn new(cfg: &TextConfig, device: Device, spec: KvPoolSpec) -> Result<KvPool> {
        let rows = spec.blocks() * spec.block_size;
        let shape = [rows, cfg.num_key_value_heads, cfg.head_dim()];
        let dtype = kv_dtype(device);
        let layers = (0..cfg.num_hidden_layers)
            .map(|_| Ok((Tensor::zeros(shape, dtype, device)?, Tensor::zeros(shape, dtype, device)?)))
            .collect::<Result<_>>()?;
        Ok(KvPool {
            spec,
            layers,
            prefix: BlockTable::new(spec.group_slots, spec.prefix_blocks(), device)?,
            suffix: BlockTable::new(spec.sample_slots, spec.suffix_blocks(), device)?,
            // Popped from the end: block 0 first.
            free: (0..spec.blocks() as u32).rev().collect(),
        })
    }

    /// Blocks not in use.
    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    /// `n` blocks from the free list.
    pub fn alloc(&mut self, n: usize) -> Result<Vec<u32>> {
        if n > self.free.len() {
            return Err(arg_err!(
                "KvPool::alloc",
                "{n} blocks asked, {} free of {} ({} rows each)",
                self.free.len(),
                self.spec.blocks(),
                self.spec.block_size
            ));
        }
        Ok(self.free.split_off(self.free.len() - n))
    }

    /// Gives blocks back.
    pub fn release(&mut self, blocks: &[u32]) {
        self.free.extend_from_slice(blocks);
    }

    /// Pool row of key `r` of a sequence whose blocks are `blocks`.
    pub fn row(&self, blocks: &[u32], r: usize) -> i32 {
        (blocks[r / self.spec.block_size] as usize * self.spec.block_size + r % self.spec.block_size) as i32
    }
}
