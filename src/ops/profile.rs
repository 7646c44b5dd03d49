//! `ACTIAL_PROFILE=1`: where a run's time goes, per op. Every op entry point
//! opens a scope; a scope's self time (its time less the ops it calls) is added
//! to its op's total. At the end of a run the binaries print [`report`]: op,
//! family, calls, self time and its share of the wall time since the first op;
//! what no op covers (data, tokenization, the optimizer's host loops, I/O) is
//! the remainder. Ops that know their work (the GEMMs, attention, the
//! elementwise and norm ops) also count FLOPs and bytes moved, so the table
//! shows achieved GFLOP/s and GB/s against this machine's measured FMA peak and
//! copy bandwidth (`crate::cpu::peak`, measured when the table is printed).
//! Off (the default), a scope costs one relaxed atomic load.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

static ENABLED: AtomicBool = AtomicBool::new(false);
static INIT: OnceLock<()> = OnceLock::new();
static START: OnceLock<Instant> = OnceLock::new();
/// (family, op) -> what its scopes added up to.
type Totals = BTreeMap<(&'static str, &'static str), Totals1>;

#[derive(Clone, Copy, Default)]
struct Totals1 {
    calls: u64,
    self_time: Duration,
    flops: u64,
    bytes: u64,
}
static TOTALS: Mutex<Totals> = Mutex::new(BTreeMap::new());

thread_local! {
    /// Open scopes on this thread: the time their children took.
    static CHILDREN: RefCell<Vec<Duration>> = const { RefCell::new(Vec::new()) };
}

/// Whether `ACTIAL_PROFILE` is set (read once), or profiling was switched on.
pub fn enabled() -> bool {
    INIT.get_or_init(|| {
        if std::env::var_os("ACTIAL_PROFILE").is_some_and(|v| v != "0") {
            ENABLED.store(true, Ordering::Relaxed);
        }
    });
    ENABLED.load(Ordering::Relaxed)
}

/// Switches profiling on for this process (tests, tools).
pub fn enable() {
    enabled();
    ENABLED.store(true, Ordering::Relaxed);
}

/// An open scope; its self time is recorded when dropped.
pub struct Scope {
    family: &'static str,
    op: &'static str,
    start: Instant,
    flops: u64,
    bytes: u64,
}

/// Records the work an open scope does: floating-point operations (a
/// multiply-add is 2) and bytes read plus written. Nothing when profiling is off.
pub fn work(scope: &mut Option<Scope>, flops: u64, bytes: u64) {
    if let Some(s) = scope {
        s.flops += flops;
        s.bytes += bytes;
    }
}

/// Opens a scope for `op` of `family` when profiling is on.
pub fn scope(family: &'static str, op: &'static str) -> Option<Scope> {
    if !enabled() {
        return None;
    }
    let start = Instant::now();
    START.get_or_init(|| start);
    CHILDREN.with(|c| c.borrow_mut().push(Duration::ZERO));
    Some(Scope { family, op, start, flops: 0, bytes: 0 })
}

impl Drop for Scope {
    fn drop(&mut self) {
        let total = self.start.elapsed();
        let children = CHILDREN.with(|c| {
            let mut c = c.borrow_mut();
            let mine = c.pop().unwrap_or_default();
            if let Some(parent) = c.last_mut() {
                *parent += total;
            }
            mine
        });
        let mut t = TOTALS.lock().expect("profile totals");
        let e = t.entry((self.family, self.op)).or_default();
        e.calls += 1;
        e.self_time += total.saturating_sub(children);
        e.flops += self.flops;
        e.bytes += self.bytes;
    }
}

/// The table of self times by op, largest first, with family subtotals; None
/// when profiling is off or no op ran.
pub fn report() -> Option<String> {
    if !enabled() {
        return None;
    }
    let wall = START.get()?.elapsed();
    let t = TOTALS.lock().expect("profile totals");
    let mut rows: Vec<_> = t.iter().map(|(&(f, op), &w)| (f, op, w)).collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.2.self_time));
    let mut families: BTreeMap<&str, Totals1> = BTreeMap::new();
    for (f, _, w) in &rows {
        let e = families.entry(f).or_default();
        e.self_time += w.self_time;
        e.flops += w.flops;
        e.bytes += w.bytes;
    }
    let covered: Duration = families.values().map(|w| w.self_time).sum();
    let pct = |d: Duration| 100.0 * d.as_secs_f64() / wall.as_secs_f64().max(1e-9);
    // The machine's limits, measured now (about 0.4 s) rather than assumed.
    let (peak_gflops, kernel) = crate::cpu::peak::fma_gflops(200);
    let peak_gbs = crate::cpu::peak::copy_gbs(200);
    let rates = |w: &Totals1| {
        let secs = w.self_time.as_secs_f64().max(1e-12);
        let gf = w.flops as f64 / secs / 1e9;
        let gb = w.bytes as f64 / secs / 1e9;
        let f = if w.flops > 0 { format!("{gf:.1} ({:.0}%)", 100.0 * gf / peak_gflops) } else { "-".into() };
        let b = if w.bytes > 0 { format!("{gb:.1} ({:.0}%)", 100.0 * gb / peak_gbs) } else { "-".into() };
        (f, b)
    };
    let mut s = format!(
        "ACTIAL_PROFILE: {:.2} s of wall time since the first op; this machine: {peak_gflops:.0} GFLOP/s FMA peak \
         ({kernel}, {} threads), {peak_gbs:.1} GB/s copy bandwidth (crate::cpu::peak)\n\n",
        wall.as_secs_f64(),
        rayon::current_num_threads()
    );
    s.push_str("| family | share | self time | GFLOP/s (of peak) | GB/s (of bandwidth) |\n|---|---|---|---|---|\n");
    let mut fam: Vec<_> = families.into_iter().collect();
    fam.sort_by_key(|f| std::cmp::Reverse(f.1.self_time));
    for (f, w) in &fam {
        let (gf, gb) = rates(w);
        s.push_str(&format!("| {f} | {:.1}% | {:.3} s | {gf} | {gb} |\n", pct(w.self_time), w.self_time.as_secs_f64()));
    }
    let rest = wall.saturating_sub(covered);
    s.push_str(&format!("| (outside the ops) | {:.1}% | {:.3} s | | |\n", pct(rest), rest.as_secs_f64()));
    s.push_str(
        "\n| op | family | calls | share | self time | per call | GFLOP/s (of peak) | GB/s (of bandwidth) |\n|---|---|---|---|---|---|---|---|\n",
    );
    for (f, op, w) in rows {
        let (gf, gb) = rates(&w);
        s.push_str(&format!(
            "| {op} | {f} | {} | {:.1}% | {:.3} s | {:.1} us | {gf} | {gb} |\n",
            w.calls,
            pct(w.self_time),
            w.self_time.as_secs_f64(),
            w.self_time.as_secs_f64() * 1e6 / w.calls.max(1) as f64
        ));
    }
    Some(s)
}
