//! What build.rs compiled: whether the CUDA kernels are in this binary, with which
//! nvcc, and ptxas' per-kernel resource report (registers, spills, shared memory).

/// The message for a binary built without nvcc.
pub const NOT_BUILT: &str = "this binary was built without the CUDA kernels (build.rs found no nvcc): \
     run tools/install-cuda-toolchain.sh, then rebuild (cargo build --release)";

/// True when the kernels were compiled into this binary.
pub const KERNELS_BUILT: bool = cfg!(actial_cuda);

/// The nvcc build.rs used, if any.
pub fn nvcc_path() -> Option<&'static str> {
    #[cfg(actial_cuda)]
    {
        Some(include_str!(concat!(env!("OUT_DIR"), "/nvcc_path.txt")))
    }
    #[cfg(not(actial_cuda))]
    {
        None
    }
}

/// One row of ptxas' report: one kernel compiled for one architecture.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelResources {
    pub kernel: String,
    pub arch: String,
    pub registers: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
    pub shared_bytes: u32,
    pub stack_bytes: u32,
    /// Marked `// hot: <name>` in its .cu file: must not spill.
    pub hot: bool,
}

/// The raw tab-separated report build.rs wrote, if the kernels were built.
pub fn ptxas_report_tsv() -> Option<&'static str> {
    #[cfg(actial_cuda)]
    {
        Some(include_str!(concat!(env!("OUT_DIR"), "/ptxas_report.tsv")))
    }
    #[cfg(not(actial_cuda))]
    {
        None
    }
}

/// Parses a report in build.rs' format (header line, then one row per kernel and
/// architecture). Errors name the line.
pub fn parse_report(tsv: &str) -> Result<Vec<KernelResources>, String> {
    let mut rows = Vec::new();
    for (n, line) in tsv.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != 8 {
            return Err(format!("ptxas report line {}: {} fields, expected 8", n + 1, f.len()));
        }
        let num = |i: usize| f[i].parse::<u32>().map_err(|e| format!("ptxas report line {}: field {i}: {e}", n + 1));
        rows.push(KernelResources {
            kernel: f[0].to_string(),
            arch: f[1].to_string(),
            registers: num(2)?,
            spill_stores: num(3)?,
            spill_loads: num(4)?,
            shared_bytes: num(5)?,
            stack_bytes: num(6)?,
            hot: f[7] == "true",
        });
    }
    Ok(rows)
}

/// The report as an aligned text table, kernels sorted by name then architecture.
pub fn format_table(rows: &[KernelResources]) -> String {
    let mut sorted: Vec<&KernelResources> = rows.iter().collect();
    sorted.sort_by(|a, b| (&a.kernel, &a.arch).cmp(&(&b.kernel, &b.arch)));
    let w = sorted.iter().map(|r| r.kernel.len()).max().unwrap_or(6).max(6);
    let mut s = format!(
        "{:<w$}  {:<7} {:>5} {:>7} {:>7} {:>7} {:>6}  hot\n",
        "kernel", "arch", "regs", "spill_st", "spill_ld", "smem", "stack"
    );
    for r in sorted {
        s.push_str(&format!(
            "{:<w$}  {:<7} {:>5} {:>8} {:>8} {:>7} {:>6}  {}\n",
            r.kernel,
            r.arch,
            r.registers,
            r.spill_stores,
            r.spill_loads,
            r.shared_bytes,
            r.stack_bytes,
            if r.hot { "yes" } else { "" }
        ));
    }
    s
}

/// Hot kernels that spill registers to local memory, as "kernel (arch): N bytes".
pub fn hot_spills(rows: &[KernelResources]) -> Vec<String> {
    rows.iter()
        .filter(|r| r.hot && (r.spill_stores > 0 || r.spill_loads > 0))
        .map(|r| format!("{} ({}): {} B stored, {} B loaded", r.kernel, r.arch, r.spill_stores, r.spill_loads))
        .collect()
}
