//! The GPU report tools/gpu-check.sh ends with: every CUDA kernel family timed at
//! Qwen2.5-VL-7B-sized shapes next to its baseline, as TFLOP/s or GB/s and % of
//! the H100 peak, plus the memory pool's high-water mark.
//!
//!   cargo run --release --example gpu_report [-- --quick | --smoke] [-- --out FILE]
//!
//! `--quick` shrinks the token counts 8x; `--smoke` shrinks tokens 64x and
//! model widths 16x (`bench::SMOKE`), small enough for the emulated driver
//! (`ACTIAL_EMULATED_DRIVER=1`): a check of the bench code, not of speed. Without a GPU it says why and
//! exits 0; a GPU that is present but fails to open is an error.

use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let out = args.iter().position(|a| a == "--out").and_then(|i| args.get(i + 1)).cloned();
    let (scale, width) = if flag("--smoke") {
        actial_smoke()
    } else if flag("--quick") {
        (0.125, 1.0)
    } else {
        (1.0, 1.0)
    };
    let text = match run(scale, width) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("gpu_report: {e}");
            std::process::exit(1);
        }
    };
    print!("{text}");
    if let Some(path) = out {
        let tmp = format!("{path}.tmp");
        let write = std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = write {
            eprintln!("gpu_report: {path}: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(actial_cuda)]
fn actial_smoke() -> (f64, f64) {
    actial::cuda::bench::SMOKE
}
#[cfg(not(actial_cuda))]
fn actial_smoke() -> (f64, f64) {
    (1.0, 1.0)
}

#[cfg(actial_cuda)]
fn run(scale: f64, width: f64) -> Result<String, String> {
    use actial::cuda::{CudaDevice, bench};
    if let Err(why) = actial::cuda::available() {
        return Ok(format!("SKIPPED: no CUDA device ({why})\n"));
    }
    let dev = CudaDevice::open(0).map_err(|e| e.to_string())?;
    let mut pairs = bench::cases(&dev, scale, width).map_err(|e| e.to_string())?;
    let (warmup, iters) = if scale < 1.0 { (1, 3) } else { (3, 10) };
    bench::report(&dev, &mut pairs, warmup, iters).map_err(|e| e.to_string())
}

#[cfg(not(actial_cuda))]
fn run(_: f64, _: f64) -> Result<String, String> {
    Ok(format!("SKIPPED: {}\n", actial::cuda::build_info::NOT_BUILT))
}
