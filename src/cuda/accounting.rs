//! What a device did, counted where it happens: bytes copied each way, host
//! waits, kernel launches, cuBLASLt calls and allocations, per phase
//! ([`Phase`]), plus the device pool's high-water mark.
//!
//! `CudaDevice` counts every copy, launch and allocation it makes (the launch
//! wrappers, the GEMM translation and the tensor bridge all go through it), so
//! the figures are the same on the emulated driver and on a GPU. They make
//! efficiency testable without a GPU: a decode step that downloads logits, or
//! a training step that allocates `[tokens, vocab]`, shows up here.
//!
//! The types live in every build (reports and metrics use them); the counting
//! itself is in `device.rs`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

pub use super::nvtx::Phase;

/// Counts of one phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Bytes copied host to device, and how many copies.
    pub h2d_bytes: u64,
    pub h2d_copies: u64,
    /// Bytes copied device to host, and how many copies (each one waits for
    /// the stream).
    pub d2h_bytes: u64,
    pub d2h_copies: u64,
    /// Bytes copied device to device.
    pub d2d_bytes: u64,
    /// Times the host waited for the device: explicit synchronisations plus
    /// device-to-host copies.
    pub syncs: u64,
    /// Kernel launches of `cuda/*.cu` (memsets and GEMMs not included).
    pub launches: u64,
    /// cuBLASLt matmuls.
    pub gemms: u64,
    /// Memsets (zero fills).
    pub memsets: u64,
    /// Allocations from the device pool, their bytes, and the largest one.
    pub allocs: u64,
    pub alloc_bytes: u64,
    pub largest_alloc: u64,
}

impl Counters {
    /// Adds `o` to these counts (the largest allocation is a maximum).
    pub fn merge(&mut self, o: &Counters) {
        self.h2d_bytes += o.h2d_bytes;
        self.h2d_copies += o.h2d_copies;
        self.d2h_bytes += o.d2h_bytes;
        self.d2h_copies += o.d2h_copies;
        self.d2d_bytes += o.d2d_bytes;
        self.syncs += o.syncs;
        self.launches += o.launches;
        self.gemms += o.gemms;
        self.memsets += o.memsets;
        self.allocs += o.allocs;
        self.alloc_bytes += o.alloc_bytes;
        self.largest_alloc = self.largest_alloc.max(o.largest_alloc);
    }

    pub fn is_empty(&self) -> bool {
        *self == Counters::default()
    }
}

/// Every phase's counts and the pool's figures, since the device opened or
/// since the last `CudaDevice::reset_accounting`. In JSON (metrics.jsonl):
/// `{"pool_peak_bytes", "pool_reserved_bytes", "phases": {"lm_forward": {..}}}`,
/// phases with nothing counted left out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "AccountingJson", try_from = "AccountingJson")]
pub struct Accounting {
    /// Indexed by [`Phase::index`].
    pub phases: [Counters; Phase::COUNT],
    /// The pool's high-water mark of bytes in use.
    pub pool_peak_bytes: u64,
    /// Bytes the pool holds from the driver now (in use + cached).
    pub pool_reserved_bytes: u64,
}

impl Accounting {
    pub fn phase(&self, p: Phase) -> &Counters {
        &self.phases[p.index()]
    }

    /// All phases added up.
    pub fn total(&self) -> Counters {
        let mut t = Counters::default();
        for c in &self.phases {
            t.merge(c);
        }
        t
    }

    /// Adds a later interval's counts (peaks are maxima, reserved the later value).
    pub fn merge(&mut self, later: &Accounting) {
        for (a, b) in self.phases.iter_mut().zip(&later.phases) {
            a.merge(b);
        }
        self.pool_peak_bytes = self.pool_peak_bytes.max(later.pool_peak_bytes);
        self.pool_reserved_bytes = later.pool_reserved_bytes;
    }

    /// A table, one row per phase that did something, and the total.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<16} {:>12} {:>7} {:>12} {:>7} {:>12} {:>7} {:>9} {:>7} {:>7} {:>12} {:>12}",
            "phase",
            "H2D",
            "copies",
            "D2H",
            "copies",
            "D2D",
            "syncs",
            "launches",
            "gemms",
            "allocs",
            "alloc bytes",
            "largest"
        );
        let row = |s: &mut String, name: &str, c: &Counters| {
            let _ = writeln!(
                s,
                "{:<16} {:>12} {:>7} {:>12} {:>7} {:>12} {:>7} {:>9} {:>7} {:>7} {:>12} {:>12}",
                name,
                bytes(c.h2d_bytes),
                c.h2d_copies,
                bytes(c.d2h_bytes),
                c.d2h_copies,
                bytes(c.d2d_bytes),
                c.syncs,
                c.launches,
                c.gemms,
                c.allocs,
                bytes(c.alloc_bytes),
                bytes(c.largest_alloc)
            );
        };
        for p in Phase::ALL {
            let c = self.phase(p);
            if !c.is_empty() {
                row(&mut s, p.name(), c);
            }
        }
        row(&mut s, "total", &self.total());
        let _ = writeln!(
            s,
            "pool: high-water mark {}, reserved {}",
            bytes(self.pool_peak_bytes),
            bytes(self.pool_reserved_bytes)
        );
        s
    }
}

/// The JSON form of [`Accounting`].
#[derive(Serialize, Deserialize)]
struct AccountingJson {
    pool_peak_bytes: u64,
    pool_reserved_bytes: u64,
    phases: BTreeMap<String, Counters>,
}

impl From<Accounting> for AccountingJson {
    fn from(a: Accounting) -> AccountingJson {
        let phases = Phase::ALL
            .iter()
            .filter(|p| !a.phase(**p).is_empty())
            .map(|p| (p.name().to_string(), *a.phase(*p)))
            .collect();
        AccountingJson { pool_peak_bytes: a.pool_peak_bytes, pool_reserved_bytes: a.pool_reserved_bytes, phases }
    }
}

impl TryFrom<AccountingJson> for Accounting {
    type Error = String;
    fn try_from(j: AccountingJson) -> std::result::Result<Accounting, String> {
        let mut a = Accounting {
            pool_peak_bytes: j.pool_peak_bytes,
            pool_reserved_bytes: j.pool_reserved_bytes,
            ..Default::default()
        };
        for (name, c) in j.phases {
            let p = Phase::ALL.iter().find(|p| p.name() == name).ok_or_else(|| format!("unknown phase {name:?}"))?;
            a.phases[p.index()] = c;
        }
        Ok(a)
    }
}

/// `1.50 MiB`-style byte counts (exact below 1 KiB).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.2} {}", UNITS[u])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_counts_and_keeps_the_largest_allocation() {
        let mut a = Counters { h2d_bytes: 10, launches: 3, largest_alloc: 100, ..Default::default() };
        a.merge(&Counters { h2d_bytes: 5, launches: 1, largest_alloc: 40, allocs: 2, ..Default::default() });
        assert_eq!((a.h2d_bytes, a.launches, a.largest_alloc, a.allocs), (15, 4, 100, 2));
        let mut acc = Accounting::default();
        acc.phases[Phase::Loss.index()] = a;
        acc.phases[Phase::Other.index()].h2d_bytes = 1;
        assert_eq!(acc.total().h2d_bytes, 16);
        let json = serde_json::to_value(&acc).unwrap();
        assert_eq!(json["phases"]["loss"]["h2d_bytes"], 15);
        assert!(json["phases"].get("backward").is_none(), "empty phases are left out");
        assert_eq!(serde_json::from_value::<Accounting>(json).unwrap(), acc, "JSON round trip");
        let bad = serde_json::json!({"pool_peak_bytes": 0, "pool_reserved_bytes": 0, "phases": {"warp": {}}});
        let err = serde_json::from_value::<Accounting>(bad).unwrap_err().to_string();
        assert!(err.contains("unknown phase \"warp\""), "{err}");
        let t = acc.table();
        assert!(t.contains("loss") && t.contains("total") && !t.contains("backward"), "{t}");
    }

    #[test]
    fn byte_counts_read_as_units() {
        assert_eq!(bytes(16), "16 B");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(3 << 30), "3.00 GiB");
    }
}
