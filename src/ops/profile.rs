//! `ACTIAL_PROFILE=1`: where a run's time goes, per op. Every op entry point
//! opens a scope; a scope's self time (its time less the ops it calls) is added
//! to its op's total. At the end of a run the binaries print [`report`]: op,
//! family, calls, self time and its share of the wall time since the first op;
//! what no op covers (data, tokenization, the optimizer's host loops, I/O) is
//! the remainder. Off (the default), a scope costs one relaxed atomic load.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

static ENABLED: AtomicBool = AtomicBool::new(false);
static INIT: OnceLock<()> = OnceLock::new();
static START: OnceLock<Instant> = OnceLock::new();
/// (family, op) -> (calls, self time).
type Totals = BTreeMap<(&'static str, &'static str), (u64, Duration)>;
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
}

/// Opens a scope for `op` of `family` when profiling is on.
pub fn scope(family: &'static str, op: &'static str) -> Option<Scope> {
    if !enabled() {
        return None;
    }
    let start = Instant::now();
    START.get_or_init(|| start);
    CHILDREN.with(|c| c.borrow_mut().push(Duration::ZERO));
    Some(Scope { family, op, start })
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
        e.0 += 1;
        e.1 += total.saturating_sub(children);
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
    let mut rows: Vec<_> = t.iter().map(|(&(f, op), &(n, d))| (f, op, n, d)).collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.3));
    let mut families: BTreeMap<&str, Duration> = BTreeMap::new();
    for r in &rows {
        *families.entry(r.0).or_default() += r.3;
    }
    let covered: Duration = families.values().sum();
    let pct = |d: Duration| 100.0 * d.as_secs_f64() / wall.as_secs_f64().max(1e-9);
    let mut s = format!("ACTIAL_PROFILE: {:.2} s of wall time since the first op\n\n", wall.as_secs_f64());
    s.push_str("| family | share | self time |\n|---|---|---|\n");
    let mut fam: Vec<_> = families.into_iter().collect();
    fam.sort_by_key(|f| std::cmp::Reverse(f.1));
    for (f, d) in &fam {
        s.push_str(&format!("| {f} | {:.1}% | {:.3} s |\n", pct(*d), d.as_secs_f64()));
    }
    let rest = wall.saturating_sub(covered);
    s.push_str(&format!("| (outside the ops) | {:.1}% | {:.3} s |\n", pct(rest), rest.as_secs_f64()));
    s.push_str("\n| op | family | calls | share | self time | per call |\n|---|---|---|---|---|---|\n");
    for (f, op, n, d) in rows {
        s.push_str(&format!(
            "| {op} | {f} | {n} | {:.1}% | {:.3} s | {:.1} us |\n",
            pct(d),
            d.as_secs_f64(),
            d.as_secs_f64() * 1e6 / n.max(1) as f64
        ));
    }
    Some(s)
}
