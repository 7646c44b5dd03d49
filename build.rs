//! Build script: compiles the CUDA kernels when a CUDA compiler is available.
//!
//! With nvcc (found through `NVCC`, `PATH`, `CUDA_HOME`/`CUDA_PATH`, or the
//! project-local toolchain of `tools/install-cuda-toolchain.sh`) and libclang (for
//! bindgen; the same toolchain directory ships one):
//! - every `cuda/*.cu` goes into one translation unit and one fatbin: SASS for
//!   sm_80 and sm_90a plus compute_80 PTX, which the driver JITs for other GPUs;
//!   the fatbin is embedded in the crate (`$OUT_DIR/actial_kernels.fatbin`);
//! - bindgen turns `cuda/params.h`, the kernel parameter structs the .cu files
//!   also include, into `$OUT_DIR/cuda_params.rs`: one definition of each struct;
//! - ptxas' register / spill / shared-memory report is parsed into
//!   `$OUT_DIR/ptxas_report.tsv` (one row per kernel and architecture), which
//!   `actial::cuda::build_info` exposes; `tests/cuda_build.rs` prints it and fails
//!   if a kernel marked `// hot: <name>` spills;
//! - `cfg(actial_cuda)` is set, which compiles the CUDA device in `src/cuda/`.
//!
//! With the kernels built and a C++20 compiler, `cuda/emulator/host_emulator.cpp`
//! (every kernel compiled for the CPU against a warp emulator, with a kernel
//! table build.rs generates from the sources) becomes a static library and
//! `cfg(actial_emulator)` is set (`tests/cuda_emulated.rs`).
//!
//! Without them the crate still builds, CPU-only, with a cargo warning, and
//! `--device cuda` fails with a message saying what to install; with
//! `ACTIAL_REQUIRE_CUDA_BUILD` set (CI) a missing tool fails the build instead.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Real architectures compiled to SASS, and the virtual one kept as PTX.
const SASS_ARCHS: [&str; 2] = ["sm_80", "sm_90a"];
const PTX_ARCH: &str = "compute_80";

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=cuda");
    // Touched by tools/install-cuda-toolchain.sh after an install: a build made
    // before the toolchain existed reruns this script and picks it up.
    println!("cargo::rerun-if-changed=tools/cuda-toolchain.stamp");
    println!("cargo::rustc-check-cfg=cfg(actial_cuda)");
    println!("cargo::rustc-check-cfg=cfg(actial_emulator)");
    for var in [
        "NVCC",
        "CUDA_HOME",
        "CUDA_PATH",
        "LIBCLANG_PATH",
        "ACTIAL_NO_CUDA",
        "ACTIAL_REQUIRE_CUDA_BUILD",
        "ACTIAL_EMULATOR_ASAN",
        "PATH",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cuda_dir = root.join("cuda");
    let sources = cu_sources(&cuda_dir);
    for s in &sources {
        println!("cargo::rerun-if-changed={}", s.display());
    }

    let required = env::var_os("ACTIAL_REQUIRE_CUDA_BUILD").is_some();
    if env::var_os("ACTIAL_NO_CUDA").is_some() {
        println!("cargo::warning=ACTIAL_NO_CUDA is set: building without CUDA kernels");
        return;
    }
    let toolchain = root.join("tools/.cuda");
    let Some(nvcc) = find_nvcc(&toolchain) else {
        assert!(
            !required,
            "ACTIAL_REQUIRE_CUDA_BUILD is set but no nvcc was found; run tools/install-cuda-toolchain.sh"
        );
        println!(
            "cargo::warning=nvcc not found (NVCC, PATH, CUDA_HOME, tools/.cuda): building without CUDA kernels; \
             run tools/install-cuda-toolchain.sh and rebuild for --device cuda"
        );
        return;
    };
    if let Err(e) = generate_bindings(&cuda_dir.join("params.h"), &out.join("cuda_params.rs"), &toolchain) {
        assert!(!required, "ACTIAL_REQUIRE_CUDA_BUILD is set but bindgen failed on cuda/params.h: {e}");
        println!(
            "cargo::warning=bindgen could not read cuda/params.h ({e}): building without CUDA kernels; \
             tools/install-cuda-toolchain.sh installs a libclang, or set LIBCLANG_PATH"
        );
        return;
    }
    match compile_fatbin(&nvcc, &cuda_dir, &sources, &out) {
        Ok(report) => {
            compile_nvtx_shim(&nvcc, &cuda_dir);
            fs::write(out.join("ptxas_report.tsv"), &report).expect("write ptxas report");
            fs::write(out.join("nvcc_path.txt"), nvcc.display().to_string()).expect("write nvcc path");
            println!("cargo::rustc-cfg=actial_cuda");
            compile_emulator(&cuda_dir, &sources, &out, required, &nvcc, &report);
        }
        // A kernel that does not compile is a bug in this repository, not a missing
        // tool: fail the build loudly rather than silently dropping CUDA.
        Err(e) => panic!("compiling cuda/*.cu with {} failed:\n{e}", nvcc.display()),
    }
}

/// The CPU emulation of the kernels (`cuda/emulator/`): the same kernel
/// sources, compiled by the host C++ compiler against a warp emulator, linked
/// as a static library and exposed as `actial::cuda::emulator`. Needs a C++20
/// compiler; built next to the fatbin, so it shares the bindgen parameter structs.
fn compile_emulator(cuda_dir: &Path, sources: &[PathBuf], out: &Path, required: bool, nvcc: &Path, report: &str) {
    // The kernel table: every `extern "C" __global__` entry point of cuda/*.cu,
    // with what limits its block size on a GPU: the first argument of its
    // __launch_bounds__ (a C expression, evaluated where the kernels are
    // included) or 1024, and its registers per thread (the most over the
    // architectures in ptxas' report), so the emulator refuses a launch the
    // hardware would refuse with "too many resources requested for launch".
    let registers = max_registers(report);
    let mut table = String::from(
        "// generated by build.rs: every kernel of cuda/*.cu as\n\
         // EMU_KERNEL(name, max threads per block from __launch_bounds__, registers per thread)\n",
    );
    for s in sources.iter().filter(|p| p.extension().is_some_and(|e| e == "cu")) {
        let text = fs::read_to_string(s).unwrap_or_default();
        for (name, bound) in kernel_decls(&text) {
            let bound = bound.unwrap_or_else(|| "1024".into());
            let regs = registers.get(&name).copied().unwrap_or(0);
            writeln!(table, "EMU_KERNEL({name}, ({bound}), {regs})").unwrap();
        }
    }
    fs::write(out.join("emulator_kernels.inc"), table).expect("write the emulator kernel table");
    let mut build = cc::Build::new();
    // ACTIAL_EMULATOR_ASAN: the kernels under AddressSanitizer, so an
    // out-of-bounds read or write on a ragged size (global or shared memory)
    // stops the emulated test that caused it. Rust's allocations go through
    // malloc, so ASan guards the buffers the tests hand to the kernels.
    let asan = env::var_os("ACTIAL_EMULATOR_ASAN").is_some();
    if asan {
        build.flag("-fsanitize=address").flag("-fno-omit-frame-pointer");
        // rustc links with -nodefaultlibs, so name the runtime itself.
        println!("cargo::rustc-link-lib=dylib=asan");
    }
    let result = build
        .cpp(true)
        .std("c++20")
        .file(cuda_dir.join("emulator/host_emulator.cpp"))
        .include(cuda_dir)
        .include(out)
        .flag("-pthread")
        .flag_if_supported("-Wno-unknown-pragmas")
        .flag_if_supported("-Wno-sign-compare")
        .flag_if_supported("-Wno-unused-parameter")
        .opt_level(2)
        .debug(false)
        // Static libstdc++: the binaries carried to a GPU machine must not
        // depend on a C++ runtime being installed there.
        .cpp_link_stdlib_static(true)
        .try_compile("actial_cuda_emulator");
    match result {
        Ok(()) => {
            println!("cargo::rustc-cfg=actial_emulator");
            link_emulated_driver(cuda_dir, out, nvcc, asan, required);
        }
        Err(e) => {
            assert!(!required, "ACTIAL_REQUIRE_CUDA_BUILD is set but the kernel emulator did not compile: {e}");
            println!(
                "cargo::warning=the CPU emulator of the CUDA kernels did not compile ({e}); its tests are skipped"
            );
        }
    }
}

/// The emulated CUDA driver and cuBLASLt (`cuda/emulator/emulated_*.cpp`):
/// shared libraries with the sonames `libcuda.so` and `libcublasLt.so` in
/// `$OUT_DIR/emulated-driver/`, the driver holding the emulated kernels (the
/// static library above, whole). `ACTIAL_EMULATED_DRIVER=1` makes
/// `actial::cuda` load them in place of NVIDIA's (`src/cuda/emulated.rs`), so
/// the device layer itself runs without a GPU. The driver is compiled against
/// the toolkit's `cuda.h`, so its signatures are the real ones.
fn link_emulated_driver(cuda_dir: &Path, out: &Path, nvcc: &Path, asan: bool, required: bool) {
    let dir = out.join("emulated-driver");
    let include = nvcc.parent().and_then(Path::parent).map(|p| p.join("include"));
    let result = (|| -> Result<(), String> {
        let include = include.filter(|p| p.join("cuda.h").is_file()).ok_or("no cuda.h next to nvcc")?;
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let compiler = cc::Build::new().cpp(true).get_compiler();
        let link = |soname: &str, inputs: &[PathBuf], extra: &[&str]| -> Result<(), String> {
            let mut cmd = compiler.to_command();
            cmd.args(["-std=c++20", "-O2", "-fPIC", "-shared", "-pthread", "-fvisibility=hidden"]);
            cmd.arg(format!("-I{}", include.display())).arg(format!("-I{}", cuda_dir.display()));
            if asan {
                cmd.args(["-fsanitize=address", "-fno-omit-frame-pointer"]);
            }
            // -Bsymbolic: the library's own symbols bind inside it, never to a
            // same-named one of the process that loads it.
            cmd.arg(format!("-Wl,-soname,{soname}")).arg("-Wl,-Bsymbolic").arg("-Wl,--no-undefined");
            // Export the API only, not the static archives (kernels, libstdc++).
            cmd.arg("-Wl,--exclude-libs,ALL");
            cmd.arg("-o").arg(dir.join(soname)).args(inputs).args(extra);
            cmd.args(["-static-libstdc++", "-static-libgcc", "-ldl"]);
            let output = cmd.output().map_err(|e| format!("could not run the C++ compiler: {e}"))?;
            if output.status.success() {
                Ok(())
            } else {
                Err(format!("linking {soname}: {}", String::from_utf8_lossy(&output.stderr)))
            }
        };
        let archive = out.join("libactial_cuda_emulator.a");
        let archive = archive.display().to_string();
        let whole = ["-Wl,--whole-archive", archive.as_str(), "-Wl,--no-whole-archive"];
        link("libcuda.so", &[cuda_dir.join("emulator/emulated_driver.cpp")], &whole)?;
        link("libcublasLt.so", &[cuda_dir.join("emulator/emulated_cublaslt.cpp")], &[])
    })();
    match result {
        Ok(()) => println!("cargo::rustc-env=ACTIAL_EMULATED_DRIVER_DIR={}", dir.display()),
        Err(e) => {
            assert!(!required, "ACTIAL_REQUIRE_CUDA_BUILD is set but the emulated driver did not build: {e}");
            println!(
                "cargo::warning=the emulated CUDA driver did not build ({e}); ACTIAL_EMULATED_DRIVER is unavailable"
            );
        }
    }
}

/// The `extern "C" __global__ void [__launch_bounds__(max_threads, ..)] name(`
/// entry points of one .cu file: each name with the text of `max_threads`.
fn kernel_decls(text: &str) -> Vec<(String, Option<String>)> {
    let mut decls = Vec::new();
    for (at, _) in text.match_indices("extern \"C\" __global__ void") {
        let mut rest = text[at + "extern \"C\" __global__ void".len()..].trim_start();
        let mut bound = None;
        if let Some(r) = rest.strip_prefix("__launch_bounds__(") {
            // The arguments end at the parenthesis that closes this one; the
            // first ends at a comma outside nested parentheses.
            let (mut depth, mut first_end, mut close) = (0i32, None, r.len());
            for (i, c) in r.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' if depth == 0 => {
                        close = i;
                        break;
                    }
                    ')' => depth -= 1,
                    ',' if depth == 0 && first_end.is_none() => first_end = Some(i),
                    _ => {}
                }
            }
            bound = Some(r[..first_end.unwrap_or(close)].trim().to_string());
            rest = r.get(close + 1..).unwrap_or_default().trim_start();
        }
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if !name.is_empty() {
            decls.push((name, bound));
        }
    }
    decls
}

/// Registers per thread of each kernel in ptxas' report (the most over its
/// architectures).
fn max_registers(report: &str) -> std::collections::HashMap<String, u32> {
    let mut regs = std::collections::HashMap::new();
    for line in report.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        if let (Some(name), Some(Ok(r))) = (cols.first(), cols.get(2).map(|c| c.parse::<u32>())) {
            let e = regs.entry(name.to_string()).or_insert(0);
            *e = (*e).max(r);
        }
    }
    regs
}

/// `cuda/*.cu`, sorted so the generated translation unit is deterministic.
fn cu_sources(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "cu" || e == "cuh" || e == "h"));
    v.sort();
    v
}

fn is_executable(p: &Path) -> bool {
    p.is_file()
}

fn find_nvcc(toolchain: &Path) -> Option<PathBuf> {
    if let Some(p) = env::var_os("NVCC").map(PathBuf::from) {
        return is_executable(&p).then_some(p);
    }
    if let Some(path) = env::var_os("PATH") {
        for dir in env::split_paths(&path) {
            let p = dir.join("nvcc");
            if is_executable(&p) {
                return Some(p);
            }
        }
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(home) = env::var_os(var) {
            let p = PathBuf::from(home).join("bin/nvcc");
            if is_executable(&p) {
                return Some(p);
            }
        }
    }
    let p = toolchain.join("nvidia/cu13/bin/nvcc");
    is_executable(&p).then_some(p)
}

fn generate_bindings(header: &Path, dest: &Path, toolchain: &Path) -> Result<(), String> {
    let local_clang = toolchain.join("clang/native");
    if env::var_os("LIBCLANG_PATH").is_none() && local_clang.join("libclang.so").is_file() {
        // SAFETY: build scripts are single-threaded; clang-sys reads this when it
        // loads libclang below.
        unsafe { env::set_var("LIBCLANG_PATH", &local_clang) };
    }
    // clang-sys panics (rather than returning an error) when no libclang exists.
    let result = std::panic::catch_unwind(|| {
        bindgen::Builder::default()
            .header(header.to_string_lossy())
            .allowlist_type("Actial.*")
            .allowlist_var("ACTIAL_.*")
            .derive_default(true)
            .derive_debug(true)
            .layout_tests(false)
            .use_core()
            .generate()
    });
    let bindings = match result {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("libclang not found".into()),
    };
    bindings.write_to_file(dest).map_err(|e| e.to_string())
}

/// Compiles all kernels into one fatbin and returns the parsed ptxas report.
fn compile_fatbin(nvcc: &Path, cuda_dir: &Path, sources: &[PathBuf], out: &Path) -> Result<String, String> {
    // One translation unit that includes every family: one fatbin, one module to
    // load, and file-local helpers (common.cuh) compiled once.
    let mut unit = String::from("// generated by build.rs: every cuda/*.cu in one translation unit\n");
    for s in sources.iter().filter(|p| p.extension().is_some_and(|e| e == "cu")) {
        writeln!(unit, "#include \"{}\"", s.display()).unwrap();
    }
    let unit_path = out.join("actial_kernels.cu");
    fs::write(&unit_path, unit).map_err(|e| e.to_string())?;
    let fatbin = out.join("actial_kernels.fatbin");
    let mut cmd = Command::new(nvcc);
    cmd.arg("-fatbin").arg("-O3").arg("-std=c++17").arg("--use_fast_math");
    // --use_fast_math turns on flush-to-zero and approximate division; the erf
    // GELU and the softmaxes use explicit intrinsics where that matters.
    for a in SASS_ARCHS {
        let compute = a.replace("sm_", "compute_");
        cmd.arg(format!("-gencode=arch={compute},code={a}"));
    }
    cmd.arg(format!("-gencode=arch={PTX_ARCH},code={PTX_ARCH}"));
    cmd.arg("-Xptxas=-v").arg("-lineinfo").arg(format!("-I{}", cuda_dir.display()));
    cmd.arg("-o").arg(&fatbin).arg(&unit_path);
    let output = cmd.output().map_err(|e| format!("could not run nvcc: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    fs::write(out.join("ptxas.log"), &stderr).map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(stderr);
    }
    let hot = hot_kernels(sources);
    Ok(parse_ptxas(&stderr, &hot))
}

/// NVTX3 is header-only C: `cuda/nvtx_shim.c` wraps push/pop for Rust. The
/// headers sit next to nvcc's (`<prefix>/include/nvtx3`, from the nvidia-nvtx
/// wheel or a full toolkit).
fn compile_nvtx_shim(nvcc: &Path, cuda_dir: &Path) {
    let include = nvcc.parent().and_then(Path::parent).map(|p| p.join("include")).unwrap_or_default();
    if !include.join("nvtx3/nvToolsExt.h").is_file() {
        panic!(
            "NVTX3 headers not found under {}: rerun tools/install-cuda-toolchain.sh (it installs nvidia-nvtx)",
            include.display()
        );
    }
    cc::Build::new().file(cuda_dir.join("nvtx_shim.c")).include(include).warnings(false).compile("actial_nvtx");
    println!("cargo::rustc-link-lib=dylib=dl");
}

/// Kernels marked `// hot: name` in a .cu file: the ones that must not spill.
fn hot_kernels(sources: &[PathBuf]) -> Vec<String> {
    let mut hot = Vec::new();
    for s in sources {
        let text = fs::read_to_string(s).unwrap_or_default();
        for line in text.lines() {
            if let Some(rest) = line.trim().strip_prefix("// hot:") {
                hot.extend(rest.split_whitespace().map(str::to_owned));
            }
        }
    }
    hot
}

/// Turns ptxas -v output into `kernel, arch, registers, spill_stores, spill_loads,
/// shared_bytes, stack_bytes, hot` rows (tab-separated, header first). Only
/// `extern "C"` entry points (unmangled names) appear; ptxas reports one
/// "Compiling entry function" block per kernel per real architecture.
fn parse_ptxas(log: &str, hot: &[String]) -> String {
    #[derive(Default)]
    struct Row {
        kernel: String,
        arch: String,
        regs: u32,
        spill_st: u32,
        spill_ld: u32,
        smem: u32,
        stack: u32,
    }
    let num_before = |line: &str, unit: &str| -> u32 {
        line.split(',')
            .find(|p| p.contains(unit))
            .and_then(|p| p.split_whitespace().find_map(|w| w.parse::<u32>().ok()))
            .unwrap_or(0)
    };
    let mut rows: Vec<Row> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let mut it = rest.split('\'');
            let kernel = it.next().unwrap_or_default().to_owned();
            let arch = rest.split("for '").nth(1).and_then(|r| r.split('\'').next()).unwrap_or_default().to_owned();
            rows.push(Row { kernel, arch, ..Default::default() });
        } else if let Some(r) = rows.last_mut() {
            if line.contains("bytes stack frame") {
                r.stack = num_before(line, "stack frame");
                r.spill_st = num_before(line, "spill stores");
                r.spill_ld = num_before(line, "spill loads");
            } else if line.contains("Used") && line.contains("registers") {
                r.regs = line
                    .split("Used")
                    .nth(1)
                    .and_then(|p| p.split_whitespace().next())
                    .and_then(|w| w.parse().ok())
                    .unwrap_or(0);
                r.smem = num_before(line, "smem");
            }
        }
    }
    let mut s = String::from("kernel\tarch\tregisters\tspill_stores\tspill_loads\tshared_bytes\tstack_bytes\thot\n");
    for r in rows {
        let h = hot.contains(&r.kernel);
        writeln!(
            s,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            r.kernel, r.arch, r.regs, r.spill_st, r.spill_ld, r.smem, r.stack, h
        )
        .unwrap();
    }
    s
}
