//! actial: teaching multimodal LLMs spatial reasoning with the Actial recipe
//! (viewpoint SFT with hybrid cold-start, then GRPO), in Rust with hand-written
//! CUDA kernels underneath. See README.md and docs/ARCHITECTURE.md.
//!
//! Layers, bottom up:
//! - [`tensor`]: shape + dtype + storage on a [`Device`];
//! - [`cpu`]: the CPU twin of every op, on plain slices;
//! - [`ops`]: the op set at the tensor level, forward and backward, dispatching by
//!   device (the only API model and trainer code use);
//! - [`cuda`]: the CUDA device (kernels from `cuda/*.cu`, cuBLASLt), kernel-level
//!   API tested against the CPU twins;
//! - [`rng`]: Philox counter-based random numbers shared by sampling and init.

pub mod cpu;
pub mod cuda;
pub mod data;
pub mod error;
pub mod model;
pub mod ops;
pub mod plot;
pub mod recipe;
pub mod rng;
pub mod tensor;
pub mod train;
pub mod util;

pub use error::{Error, Result};
pub use tensor::{DType, Device, Shape, Tensor};
