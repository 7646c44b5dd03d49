//! One error type for the whole crate. Every variant names the op (or file) it
//! came from, so a failure deep in a training step still says where it happened.

use crate::tensor::{DType, Device};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Shapes that do not fit together. `msg` names the shapes involved.
    #[error("{op}: shape mismatch: {msg}")]
    Shape { op: &'static str, msg: String },

    /// A tensor of a dtype the op does not take.
    #[error("{op}: {what} has dtype {got:?}, expected {expected}")]
    DType { op: &'static str, what: &'static str, got: DType, expected: &'static str },

    /// Operands on different devices; ops never copy implicitly.
    #[error("{op}: operands live on different devices ({a} and {b}); copy explicitly with to_device")]
    DeviceMismatch { op: &'static str, a: Device, b: Device },

    /// An argument out of its valid range (an index past the end, a bad scale...).
    #[error("{op}: {msg}")]
    Arg { op: &'static str, msg: String },

    /// A config.json that is not valid or not a Qwen2.5-VL config.
    #[error("{file}: {msg}")]
    Config { file: String, msg: String },

    /// A checkpoint (safetensors) problem: names the file and the tensors.
    #[error("{file}: {msg}")]
    Checkpoint { file: String, msg: String },

    /// A file that could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// A CUDA driver, kernel launch or library failure; `op` names the kernel and
    /// its shapes.
    #[error("{op}: CUDA error: {msg}")]
    Cuda { op: String, msg: String },

    /// A device allocation that did not fit.
    #[error(
        "{op} (phase {phase}): out of GPU memory: requested {requested} bytes, {free} of {total} bytes free on the \
         device ({in_use} in use and {reserved} reserved by actial's pool, whose high-water mark is {peak})"
    )]
    OutOfMemory {
        op: String,
        phase: &'static str,
        requested: usize,
        free: usize,
        total: usize,
        in_use: usize,
        reserved: usize,
        peak: usize,
    },

    /// A device this build or machine cannot provide.
    #[error("device {device} is not available: {why}")]
    DeviceUnavailable { device: Device, why: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// `shape_err!("op", "fmt", args..)` builds an `Error::Shape`.
#[macro_export]
macro_rules! shape_err {
    ($op:expr, $($fmt:tt)*) => {
        $crate::error::Error::Shape { op: $op, msg: format!($($fmt)*) }
    };
}

/// `arg_err!("op", "fmt", args..)` builds an `Error::Arg`.
#[macro_export]
macro_rules! arg_err {
    ($op:expr, $($fmt:tt)*) => {
        $crate::error::Error::Arg { op: $op, msg: format!($($fmt)*) }
    };
}

/// The message of a caught panic (a third-party parser's, turned into an
/// error naming the file).
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into())
}
