//! The machine's measured limits: FMA peak (independent FMA chains on every
//! rayon thread, with the widest vectors the CPU has) and memory bandwidth (a
//! large copy on every thread). Benchmarks and `ACTIAL_PROFILE` read achieved
//! GFLOP/s and GB/s against these rather than a datasheet number (turbo clocks
//! and vector width vary by host).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Independent accumulator chains: enough to cover FMA latency on two pipes.
const CHAINS: usize = 16;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma512(iters: usize) -> f32 {
    let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    let mut acc = [_mm512_set1_ps(1.0); CHAINS];
    for _ in 0..iters {
        for r in acc.iter_mut() {
            *r = _mm512_fmadd_ps(*r, a, b);
        }
    }
    acc.iter().map(|&r| _mm512_reduce_add_ps(r)).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma256(iters: usize) -> f32 {
    let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    let mut acc = [_mm256_set1_ps(1.0); CHAINS];
    for _ in 0..iters {
        for r in acc.iter_mut() {
            *r = _mm256_fmadd_ps(*r, a, b);
        }
    }
    let mut out = [0.0f32; 8];
    let mut s = 0.0;
    for r in acc {
        // SAFETY: `out` holds 8 floats.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), r) };
        s += out.iter().sum::<f32>();
    }
    s
}

/// (FLOPs per call per thread, the kernel) for the best vector width available.
pub fn kernel() -> (u64, fn(usize) -> f32, &'static str) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was detected at runtime.
            return ((CHAINS * 16 * 2) as u64, |n| unsafe { fma512(n) }, "avx512 fma");
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the features were detected at runtime.
            return ((CHAINS * 8 * 2) as u64, |n| unsafe { fma256(n) }, "avx2 fma");
        }
    }
    (2, |n| (0..n).fold(1.0f32, |a, _| a.mul_add(0.999_999, 1e-7)), "scalar fma")
}

/// FMA peak of all rayon threads, GFLOP/s, measured for about `ms`
/// milliseconds, and the kernel's name.
pub fn fma_gflops(ms: u64) -> (f64, &'static str) {
    use rayon::prelude::*;
    let (per_iter, kernel, name) = kernel();
    let threads = rayon::current_num_threads();
    let iters = 1 << 16;
    let run = || (0..threads).into_par_iter().map(|_| kernel(std::hint::black_box(iters))).sum::<f32>();
    std::hint::black_box(run());
    let (start, mut calls) = (std::time::Instant::now(), 0u64);
    while start.elapsed().as_millis() < ms as u128 {
        std::hint::black_box(run());
        calls += 1;
    }
    let flops = (calls * per_iter * iters as u64 * threads as u64) as f64;
    (flops / start.elapsed().as_secs_f64() / 1e9, name)
}

/// Memory bandwidth of all rayon threads, GB/s (bytes read + written), from
/// copying a 256 MiB buffer for about `ms` milliseconds.
pub fn copy_gbs(ms: u64) -> f64 {
    use rayon::prelude::*;
    let n = 32 << 20; // f64s: 256 MiB each way, far past any cache
    let src = vec![1.0f64; n];
    let mut dst = vec![0.0f64; n];
    let chunk = n / rayon::current_num_threads().max(1);
    let mut copy = || dst.par_chunks_mut(chunk).zip(src.par_chunks(chunk)).for_each(|(d, s)| d.copy_from_slice(s));
    copy();
    let (start, mut calls) = (std::time::Instant::now(), 0u64);
    while start.elapsed().as_millis() < ms as u128 {
        copy();
        calls += 1;
    }
    std::hint::black_box(&dst);
    (calls as f64 * 2.0 * (n * 8) as f64) / start.elapsed().as_secs_f64() / 1e9
}
