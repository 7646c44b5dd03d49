//! `ACTIAL_PROFILE`: ops record their calls and self time (one test in its own
//! process: the totals are global).

use actial::ops;
use actial::{Device, Tensor};

#[test]
fn ops_record_calls_and_self_time() {
    assert!(ops::profile::report().is_none() || std::env::var_os("ACTIAL_PROFILE").is_some(), "off by default");
    ops::profile::enable();
    let a = Tensor::from_f32((0..64 * 64).map(|i| (i % 7) as f32).collect(), [64, 64], Device::Cpu).unwrap();
    for _ in 0..3 {
        ops::matmul(&a, &a, false, true).unwrap();
    }
    let x = ops::linear(&a, &a, None).unwrap();
    ops::swiglu(&x, &x).unwrap();
    let table = ops::profile::report().unwrap();
    for row in ["| matmul | matmul | 3 |", "| linear | matmul | 1 |", "| swiglu | elementwise | 1 |"] {
        assert!(table.contains(row), "{row} in\n{table}");
    }
    assert!(table.contains("| (outside the ops) |"), "{table}");
    // Work counted: the GEMMs' FLOPs against the peak; swiglu moves bytes only.
    let cells = |op: &str, family: &str| {
        let row = table.lines().find(|l| l.starts_with(&format!("| {op} | {family} |"))).unwrap();
        row.split('|').map(|c| c.trim().to_string()).collect::<Vec<_>>()
    };
    assert!(cells("matmul", "matmul")[7].ends_with("%)") && cells("linear", "matmul")[7].ends_with("%)"), "{table}");
    assert_eq!(cells("swiglu", "elementwise")[7], "-", "{table}");
    assert!(cells("swiglu", "elementwise")[8].ends_with("%)"), "{table}");
    assert!(table.contains("GFLOP/s FMA peak"), "{table}");
}
