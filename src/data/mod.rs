//! Data: viewpoint QA from camera poses, the procedural renderer, SAT-like
//! questions, dataset formats and the hybrid cold-start mix.

pub mod benchmarks;
pub mod colmap;
pub mod formats;
pub mod geometry;
pub mod mix;
pub mod parquet;
pub mod pretrain;
pub mod qa;
pub mod render;
pub mod sat;
pub mod sheet;
pub mod synth;
pub mod viewpoint;
