//! CPU twins of every op: plain functions on f32 slices, multi-threaded with rayon
//! and the `gemm` crate. The tensor-level API in `crate::ops` checks shapes and
//! dtypes, then calls these. They are also the reference the CUDA kernels are tested
//! against, so they favour clarity where speed does not matter.
//!
//! Conventions: row-major; a "row" is the last dim; parameter gradients are
//! accumulated (`+=`) into caller-owned buffers, input gradients are returned.

pub mod activation;
pub mod attention;
pub mod embedding;
pub mod lora;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod optim;
pub mod rope;
pub mod sampling;
