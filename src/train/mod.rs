//! Training: the SFT stage (config, data encoding, the trainer loop).

pub mod config;
pub mod data;
pub mod eval;
pub mod grpo;
pub mod grpo_trainer;
pub mod optimizer;
pub mod plan;
pub mod reward;
pub mod run_dir;
pub mod sft;
pub mod tensorboard;
