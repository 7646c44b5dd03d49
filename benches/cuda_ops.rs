//! CUDA kernel benchmarks, each family next to its baseline (see
//! `actial::cuda::bench` for the shapes and what each baseline is). Units as in
//! `cpu_ops`: "elem/s" counts FLOPs for compute-bound cases, "B/s" bytes moved for
//! memory-bound ones. For the table with TFLOP/s, GB/s and % of H100 peak, run
//! `cargo run --release --example gpu_report` (tools/gpu-check.sh does).
//!
//! Without a GPU (or built without nvcc) this prints why and measures nothing.

use criterion::{Criterion, criterion_group, criterion_main};

#[cfg(actial_cuda)]
fn cuda_benches(c: &mut Criterion) {
    use std::time::Duration;

    use actial::cuda::CudaDevice;
    use actial::cuda::bench::{self, Case, Work};
    use criterion::Throughput;

    if let Err(why) = actial::cuda::available() {
        println!("SKIPPED: no CUDA device ({why})");
        return;
    }
    let dev = CudaDevice::open(0).expect("a CUDA device is present, so opening it must work");
    // On the emulated driver the full shapes would take hours; smoke sizes
    // still exercise every case (the figures are the emulator's, not a GPU's).
    let (scale, width) = if actial::cuda::emulated::requested() {
        println!("{}: smoke sizes, timings are not a GPU's", dev.name());
        bench::SMOKE
    } else {
        (1.0, 1.0)
    };
    let mut pairs = bench::cases(&dev, scale, width).expect("bench setup");
    for p in pairs.iter_mut() {
        let mut g = c.benchmark_group(format!("cuda {}", p.family));
        g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
        let mut one = |case: &mut Case, label: String| {
            g.throughput(match case.work {
                Work::Flops(f) => Throughput::Elements(f as u64),
                Work::Bytes(b) => Throughput::Bytes(b as u64),
            });
            g.bench_function(label, |b| {
                b.iter_custom(|iters| {
                    let ms = bench::time_ms(&dev, &mut case.run, 0, iters as usize).expect("bench run");
                    Duration::from_secs_f64(ms * 1e-3 * iters as f64)
                })
            });
        };
        let name = p.case.name.clone();
        one(&mut p.case, name);
        if let Some(b) = p.baseline.as_mut() {
            let name = format!("baseline: {}", b.name);
            one(b, name);
        }
        g.finish();
    }
}

#[cfg(not(actial_cuda))]
fn cuda_benches(_: &mut Criterion) {
    println!("SKIPPED: {}", actial::cuda::build_info::NOT_BUILT);
}

criterion_group!(benches, cuda_benches);
criterion_main!(benches);
