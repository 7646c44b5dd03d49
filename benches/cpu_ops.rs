//! CPU op benchmarks, each next to a naive version of the same op.
//!
//! Units: for compute-bound ops criterion's "elem/s" counts FLOPs (so Gelem/s =
//! GFLOP/s); for memory-bound ops "B/s" counts the bytes the op must move.
//! Run: `cargo bench --bench cpu_ops` (add a filter such as `matmul` to run one
//! group). CUDA kernels join these groups when the CUDA device lands.

use std::hint::black_box;
use std::time::Duration;

use actial::cpu::attention::{AttnShape, attention_naive};
use actial::cpu::matmul::matmul_naive;
use actial::cpu::norm::rms_norm_naive;
use actial::cpu::optim::adamw_step_naive;
use actial::ops::{self, AdamSlot, AdamW, AttnSpec};
use actial::rng::Philox;
use actial::{DType, Device, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn randn(seed: u64, dims: &[usize]) -> Tensor {
    let n = dims.iter().product();
    Tensor::from_f32(Philox::new(seed, 0).normal_vec(n, 1.0), dims, Device::Cpu).unwrap()
}

fn cpu_peak(c: &mut Criterion) {
    use rayon::prelude::*;
    let mut g = c.benchmark_group("cpu_peak (elem = FLOP)");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    let (flops_per_iter, kernel, name) = actial::cpu::peak::kernel();
    let iters = 1 << 20;
    let threads = rayon::current_num_threads();
    g.throughput(Throughput::Elements(flops_per_iter * iters as u64 * threads as u64));
    g.bench_function(format!("{name} x {threads} threads"), |b| {
        b.iter(|| black_box((0..threads).into_par_iter().map(|_| kernel(black_box(iters))).sum::<f32>()))
    });
    g.finish();
}

fn matmul(c: &mut Criterion) {
    let mut g = c.benchmark_group("matmul_f32 (elem = FLOP)");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    for n in [256usize, 1024] {
        let (a, b) = (randn(1, &[n, n]), randn(2, &[n, n]));
        g.throughput(Throughput::Elements(2 * (n * n * n) as u64));
        g.bench_with_input(BenchmarkId::new("actial ops::matmul", n), &n, |bn, _| {
            bn.iter(|| black_box(ops::matmul(&a, &b, false, false).unwrap()))
        });
        let (av, bv) = (a.to_vec_f32().unwrap(), b.to_vec_f32().unwrap());
        g.bench_with_input(BenchmarkId::new("naive triple loop", n), &n, |bn, _| {
            bn.iter(|| black_box(matmul_naive(n, n, n, &av, &bv)))
        });
    }
    g.finish();
}

/// FLOPs of one attention forward: 2·d per score and 2·d per weighted value.
fn attention_flops(cu: &[usize], hq: usize, d: usize, causal: bool) -> u64 {
    cu.windows(2)
        .map(|w| {
            let l = (w[1] - w[0]) as u64;
            let pairs = if causal { l * (l + 1) / 2 } else { l * l };
            4 * pairs * d as u64 * hq as u64
        })
        .sum()
}

fn attention(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention (elem = FLOP)");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    // Vision: 1024 patches in windows of 64, 16 heads of 80, bidirectional.
    // Text: 1024 tokens causal, GQA 16:2, head dim 128.
    let cases = [
        ("vision windows t1024 h16 d80", (0..=16).map(|i| i * 64).collect::<Vec<usize>>(), 16, 16, 80, false),
        ("text causal t1024 h16:2 d128", vec![0, 1024], 16, 2, 128, true),
    ];
    for (name, cu, hq, hkv, d, causal) in cases {
        let t = *cu.last().unwrap();
        let (q, k, v) = (randn(1, &[t, hq, d]), randn(2, &[t, hkv, d]), randn(3, &[t, hkv, d]));
        let cu_t = Tensor::from_i32(cu.iter().map(|&x| x as i32).collect(), [cu.len()], Device::Cpu).unwrap();
        let spec = AttnSpec { scale: (d as f32).powf(-0.5), causal };
        g.throughput(Throughput::Elements(attention_flops(&cu, hq, d, causal)));
        g.bench_function(BenchmarkId::new("actial ops::attention", name), |b| {
            b.iter(|| black_box(ops::attention(&q, &k, &v, &cu_t, spec).unwrap()))
        });
        let shape = AttnShape { q_heads: hq, kv_heads: hkv, head_dim: d, scale: spec.scale, causal };
        let (qv, kv, vv) = (q.to_vec_f32().unwrap(), k.to_vec_f32().unwrap(), v.to_vec_f32().unwrap());
        g.bench_function(BenchmarkId::new("naive loops", name), |b| {
            b.iter(|| black_box(attention_naive(&qv, &kv, &vv, &cu, &shape)))
        });
        // Backward does 2.5x the forward's FLOPs (recomputed scores, dV, dP, dQ, dK).
        let fwd = ops::attention(&q, &k, &v, &cu_t, spec).unwrap();
        let dout = randn(4, &[t, hq, d]);
        g.throughput(Throughput::Elements(attention_flops(&cu, hq, d, causal) * 5 / 2));
        g.bench_function(BenchmarkId::new("actial ops::attention_backward", name), |b| {
            b.iter(|| black_box(ops::attention_backward(&q, &k, &v, &cu_t, spec, &fwd, &dout).unwrap()))
        });
    }
    g.finish();
}

fn rms_norm(c: &mut Criterion) {
    let mut g = c.benchmark_group("rms_norm (B = bytes moved)");
    g.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    // Both versions allocate their output. At 4096 rows that is a 32 MiB buffer, which
    // glibc serves with a fresh mmap each call: first-touch page faults then dominate
    // both timings (see docs/ARCHITECTURE.md, "Memory"). 1024 rows (8 MiB) shows the
    // kernel itself.
    for rows in [1024usize, 4096] {
        let d = 2048;
        let (x, w) = (randn(1, &[rows, d]), randn(2, &[d]));
        g.throughput(Throughput::Bytes((2 * rows * d * 4) as u64)); // read x, write y
        g.bench_function(format!("actial ops::rms_norm {rows}x{d}"), |b| {
            b.iter(|| black_box(ops::rms_norm(&x, &w, 1e-6).unwrap()))
        });
        let (xv, wv) = (x.to_vec_f32().unwrap(), w.to_vec_f32().unwrap());
        g.bench_function(format!("naive loop {rows}x{d}"), |b| b.iter(|| black_box(rms_norm_naive(&xv, &wv, 1e-6))));
    }
    g.finish();
}

fn adamw(c: &mut Criterion) {
    let mut g = c.benchmark_group("adamw (B = bytes moved)");
    g.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    let n = 1 << 24; // 16.8M parameters
    let h = AdamW::default();
    let mut p = randn(1, &[n]);
    let gr = randn(2, &[n]);
    let mut m = Tensor::zeros([n], DType::F32, Device::Cpu).unwrap();
    let mut v = Tensor::zeros([n], DType::F32, Device::Cpu).unwrap();
    g.throughput(Throughput::Bytes((n * 4 * 7) as u64)); // read p g m v, write p m v
    let mut step = 0;
    g.bench_function("actial ops::adamw_step 16.8M", |b| {
        b.iter(|| {
            step += 1;
            ops::adamw_step(&mut [AdamSlot { param: &mut p, grad: &gr, m: &mut m, v: &mut v }], &h, step, 1.0).unwrap()
        })
    });
    let (mut pv, gv) = (p.to_vec_f32().unwrap(), gr.to_vec_f32().unwrap());
    let (mut mv, mut vv) = (vec![0.0f32; n], vec![0.0f32; n]);
    let mut step = 0;
    g.bench_function("naive loop 16.8M", |b| {
        b.iter(|| {
            step += 1;
            adamw_step_naive(&mut pv, &gv, &mut mv, &mut vv, &h, step)
        })
    });
    g.finish();
}

criterion_group!(benches, cpu_peak, matmul, attention, rms_norm, adamw);
criterion_main!(benches);
