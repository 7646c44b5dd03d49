//! What build.rs compiled: every kernel of cuda/*.cu for both SASS architectures,
//! and no register spills in kernels marked hot. Prints ptxas' table.
//!
//! Without nvcc the kernels are not built and this reports itself skipped;
//! `.ci/run` installs nvcc and sets ACTIAL_REQUIRE_CUDA_BUILD=1, which turns a
//! skip into a failure there.

use std::fs;

use actial::cuda::build_info;

/// `extern "C" __global__` kernel names declared in cuda/*.cu.
fn declared_kernels() -> Vec<String> {
    let mut names = Vec::new();
    // The source tree this binary was built from, or ./cuda when it runs from a
    // copy elsewhere (tools/gpu-check.sh on a GPU machine).
    let built = concat!(env!("CARGO_MANIFEST_DIR"), "/cuda");
    let dir = if std::path::Path::new(built).is_dir() { built } else { "cuda" };
    let decl =
        regex::Regex::new(r#"extern "C" __global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\("#).unwrap();

    for entry in fs::read_dir(dir).expect("cuda/ exists") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "cu") {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap();
        let before = names.len();
        names.extend(decl.captures_iter(&text).map(|c| c[1].to_string()));
        let declared = text.matches("extern \"C\" __global__").count();
        assert_eq!(names.len() - before, declared, "{}: a kernel declaration the pattern misses", path.display());
    }
    names.sort();
    names
}

fn report() -> Option<Vec<build_info::KernelResources>> {
    match build_info::ptxas_report_tsv() {
        Some(tsv) => Some(build_info::parse_report(tsv).expect("build.rs writes a well-formed report")),
        None => {
            assert!(
                std::env::var_os("ACTIAL_REQUIRE_CUDA_BUILD").is_none(),
                "ACTIAL_REQUIRE_CUDA_BUILD is set but the kernels were not built: {}",
                build_info::NOT_BUILT
            );
            println!("SKIPPED: {}", build_info::NOT_BUILT);
            None
        }
    }
}

#[test]
fn every_kernel_is_compiled_for_sm80_and_sm90a() {
    let Some(rows) = report() else { return };
    println!("nvcc: {}", build_info::nvcc_path().unwrap_or("?"));
    println!("{}", build_info::format_table(&rows));
    let declared = declared_kernels();
    assert!(declared.len() >= 20, "found only {} kernels in cuda/*.cu", declared.len());
    for k in &declared {
        for arch in ["sm_80", "sm_90a"] {
            assert!(
                rows.iter().any(|r| &r.kernel == k && r.arch == arch),
                "kernel {k} is declared in cuda/ but ptxas compiled no {arch} code for it"
            );
        }
    }
}

#[test]
fn hot_kernels_do_not_spill() {
    let Some(rows) = report() else { return };
    let hot: Vec<_> = rows.iter().filter(|r| r.hot).collect();
    assert!(!hot.is_empty(), "no kernel is marked `// hot:`; the spill check would check nothing");
    let spills = build_info::hot_spills(&rows);
    assert!(spills.is_empty(), "hot kernels spill registers:\n{}", spills.join("\n"));
}

#[test]
fn the_spill_check_sees_a_spill() {
    // The checker itself, on a report with one spilling hot kernel.
    let tsv = "kernel\tarch\tregisters\tspill_stores\tspill_loads\tshared_bytes\tstack_bytes\thot\n\
               fast\tsm_90a\t255\t64\t64\t0\t64\ttrue\n\
               cold\tsm_90a\t255\t8\t8\t0\t8\tfalse\n";
    let rows = build_info::parse_report(tsv).unwrap();
    assert_eq!(build_info::hot_spills(&rows), vec!["fast (sm_90a): 64 B stored, 64 B loaded".to_string()]);
    assert!(build_info::parse_report("h\nbad\tline\n").unwrap_err().contains("line 2"));
}

#[test]
fn without_a_gpu_cuda_says_why() {
    match actial::cuda::available() {
        Ok(n) => println!("{n} CUDA device(s)"),
        Err(why) => {
            println!("no CUDA: {why}");
            assert!(!why.is_empty());
        }
    }
}

/// Installing the toolchain after a CPU-only build must make the next `cargo
/// build` compile the kernels: the install script touches a tracked stamp that
/// build.rs watches (a watched path that does not exist would rerun build.rs on
/// every build, so the stamp is committed).
#[test]
fn installing_the_toolchain_triggers_the_kernel_build() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let stamp = "tools/cuda-toolchain.stamp";
    assert!(root.join(stamp).is_file(), "{stamp} is missing");
    let build = fs::read_to_string(root.join("build.rs")).unwrap();
    assert!(build.contains(&format!("cargo::rerun-if-changed={stamp}")), "build.rs does not watch {stamp}");
    let install = fs::read_to_string(root.join("tools/install-cuda-toolchain.sh")).unwrap();
    assert!(
        install.contains("touch \"$root/tools/cuda-toolchain.stamp\""),
        "the install script does not touch {stamp}"
    );
}
