//! Small helpers every layer uses: atomic file writes, I/O errors that name
//! the file, progress bars. Nothing here knows about models or training.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// An `io::Error` as this crate's error, naming `path`.
pub fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Io { path: path.display().to_string(), source: e }
}

/// Writes `data` to `path` through `path.tmp` + fsync + rename: a crash leaves
/// the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    let io = |e| Error::Io { path: tmp.display().to_string(), source: e };
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// A progress bar over `len` units: `label`, bar, `pos/len unit`, elapsed and
/// remaining time (`unit` may be empty).
pub fn progress_bar(label: &str, len: u64, unit: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(len);
    let unit = if unit.is_empty() { String::new() } else { format!(" {unit}") };
    // Braces in the label or unit are text, not template fields.
    let text = |s: &str| s.replace('{', "{{").replace('}', "}}");
    let template = format!("{} {{wide_bar}} {{pos}}/{{len}}{} [{{elapsed}} < {{eta}}]", text(label), text(&unit));
    pb.set_style(indicatif::ProgressStyle::with_template(&template).expect("valid template"));
    pb
}

/// mimalloc's `mi_option_purge_delay` (its `mimalloc.h`, v2 and v3 alike).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc (the binaries' allocator) to keep freed memory instead of
/// returning it to the OS after its purge delay. The CPU path frees and
/// allocates every activation each step, so with purging each step page-faults
/// and zeroes the same memory again in the kernel (~100k page faults in 40 tiny
/// SFT steps, 750 without; ~5% of the step time on the 2-core development
/// machine, README "Where the time goes"). Memory then
/// stays at the run's peak, which a training run reaches every step anyway. A
/// `MIMALLOC_PURGE_DELAY` in the environment wins. Called first in `main`.
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a process-wide option; mimalloc reads it on each purge.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}
