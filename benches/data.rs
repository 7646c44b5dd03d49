//! Synthetic data throughput: rendering viewpoint pairs at 112x112 (with 2x2
//! supersampling, as `actial-data synth` does), single pairs and a parallel batch.
//! Run: `cargo bench --bench data`. Elements = image pairs.

use std::hint::black_box;
use std::time::Duration;

use actial::data::synth::{SynthConfig, synth_pair};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;

fn render(c: &mut Criterion) {
    let mut g = c.benchmark_group("render_pairs (elem = image pair)");
    g.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    let cfg = SynthConfig::default();
    g.throughput(Throughput::Elements(1));
    g.bench_function("one pair, 112px, ss2, 1 thread", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            black_box(synth_pair(0, i, &cfg))
        })
    });
    let n = 64u64;
    g.throughput(Throughput::Elements(n));
    g.bench_function(format!("64 pairs, 112px, ss2, {} threads", rayon::current_num_threads()), |b| {
        let mut base = 0;
        b.iter(|| {
            base += n;
            (base..base + n).into_par_iter().map(|i| black_box(synth_pair(0, i, &cfg)).images[0].width()).sum::<u32>()
        })
    });
    g.finish();
}

criterion_group!(benches, render);
criterion_main!(benches);
