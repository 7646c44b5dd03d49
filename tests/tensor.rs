//! The tensor type: views and layout copies, dtypes, devices, and the errors
//! misuse must produce (naming the op and the shapes).

mod common;
use actial::ops;
use actial::{DType, Device, Tensor};
use common::*;
use half::bf16;

fn t(data: Vec<f32>, dims: &[usize]) -> Tensor {
    Tensor::from_f32(data, dims, Device::Cpu).unwrap()
}

#[test]
fn narrow_reshape_permute_cat() {
    let x = t((0..24).map(|i| i as f32).collect(), &[2, 3, 4]);
    // dim 0: a free view; inner dims: copies.
    assert_eq!(vec_of(&x.narrow(0, 1, 1).unwrap()), (12..24).map(|i| i as f32).collect::<Vec<_>>());
    assert_eq!(
        vec_of(&x.narrow(1, 1, 2).unwrap()),
        vec![4., 5., 6., 7., 8., 9., 10., 11., 16., 17., 18., 19., 20., 21., 22., 23.]
    );
    assert_eq!(vec_of(&x.narrow(2, 3, 1).unwrap()), vec![3., 7., 11., 15., 19., 23.]);
    // A view of a view keeps the right offset.
    let v = x.narrow(0, 1, 1).unwrap().reshape([3, 4]).unwrap().narrow(0, 2, 1).unwrap();
    assert_eq!(vec_of(&v), vec![20., 21., 22., 23.]);
    // permute [2, 0, 1]: out[k][i][j] = x[i][j][k]
    let p = x.permute(&[2, 0, 1]).unwrap();
    assert_eq!(p.dims(), &[4, 2, 3]);
    let pv = vec_of(&p);
    for i in 0..2 {
        for j in 0..3 {
            for k in 0..4 {
                assert_eq!(pv[k * 6 + i * 3 + j], (i * 12 + j * 4 + k) as f32);
            }
        }
    }
    assert_eq!(vec_of(&x.transpose(0, 2).unwrap().transpose(0, 2).unwrap()), vec_of(&x));
    let a = t(vec![1., 2., 3., 4.], &[2, 2]);
    let b = t(vec![5., 6.], &[2, 1]);
    assert_eq!(vec_of(&Tensor::cat(&[&a, &b], 1).unwrap()), vec![1., 2., 5., 3., 4., 6.]);
    assert_eq!(Tensor::cat(&[&a, &a], 0).unwrap().dims(), &[4, 2]);
}

#[test]
fn writes_do_not_leak_through_shared_storage() {
    let x = t(vec![1., 2., 3., 4.], &[4]);
    let mut y = x.clone();
    ops::scale_assign(&mut y, 10.0).unwrap();
    assert_eq!(vec_of(&x), vec![1., 2., 3., 4.]);
    assert_eq!(vec_of(&y), vec![10., 20., 30., 40.]);
    let mut view = x.narrow(0, 2, 2).unwrap();
    ops::scale_assign(&mut view, -1.0).unwrap();
    assert_eq!(vec_of(&view), vec![-3., -4.]);
    assert_eq!(vec_of(&x), vec![1., 2., 3., 4.]);
}

#[test]
fn bf16_weights_are_upcast() {
    let w32 = randn(1, &[4, 6], 1.0);
    let wb = w32.to_dtype(DType::BF16).unwrap();
    assert_eq!(wb.dtype(), DType::BF16);
    assert_eq!(wb.size_in_bytes(), 48);
    let rounded: Vec<f32> = vec_of(&w32).iter().map(|&v| bf16::from_f32(v).to_f32()).collect();
    assert_eq!(vec_of(&wb), rounded);
    let x = randn(2, &[3, 6], 1.0);
    let y_bf = ops::linear(&x, &wb, None).unwrap();
    let y_ref = ops::linear(&x, &t(rounded, &[4, 6]), None).unwrap();
    assert_eq!(y_bf.dtype(), DType::F32);
    assert_eq!(vec_of(&y_bf), vec_of(&y_ref));
    let raw = Tensor::from_bf16(vec![bf16::from_f32(1.5); 2], [2], Device::Cpu).unwrap();
    assert_eq!(vec_of(&raw), vec![1.5, 1.5]);
}

#[test]
fn matmul_matches_the_naive_loop() {
    for &(m, n, k) in &[(1, 1, 1), (7, 5, 3), (64, 33, 129), (300, 257, 70)] {
        let a = randn(1, &[m, k], 1.0);
        let b = randn(2, &[k, n], 1.0);
        let c = vec_of(&ops::matmul(&a, &b, false, false).unwrap());
        let want = actial::cpu::matmul::matmul_naive(m, n, k, &vec_of(&a), &vec_of(&b));
        let err = max_rel_err(&c, &want, 1.0);
        assert!(err < 1e-4, "{m}x{n}x{k}: {err}");
        // The transposed-storage paths compute the same product.
        let at = a.transpose(0, 1).unwrap();
        let bt = b.transpose(0, 1).unwrap();
        assert!(max_rel_err(&vec_of(&ops::matmul(&at, &bt, true, true).unwrap()), &want, 1.0) < 1e-4);
    }
}

#[test]
fn misuse_errors_name_the_op_and_shapes() {
    let a = t(vec![0.0; 6], &[2, 3]);
    let b = t(vec![0.0; 8], &[4, 2]);
    let e = ops::matmul(&a, &b, false, false).err().unwrap().to_string();
    assert!(e.contains("matmul") && e.contains("[2, 3]") && e.contains("[4, 2]"), "{e}");
    // No silent broadcasting: a batched A with a 2D B is an error.
    let a3 = t(vec![0.0; 12], &[2, 2, 3]);
    let b2 = t(vec![0.0; 6], &[3, 2]);
    assert!(ops::matmul(&a3, &b2, false, false).is_err());
    let e = ops::add(&a, &t(vec![0.0; 3], &[3])).err().unwrap().to_string();
    assert!(e.contains("add") && e.contains("[2, 3]") && e.contains("[3]"), "{e}");
    let e = ops::linear(&a, &b, None).err().unwrap().to_string();
    assert!(e.contains("linear") && e.contains("[2, 3]"), "{e}");
    let e = a.reshape([4, 2]).err().unwrap().to_string();
    assert!(e.contains("reshape") && e.contains("[4, 2]"), "{e}");
    let idx = Tensor::from_i32(vec![0, 5], [2], Device::Cpu).unwrap();
    let e = ops::index_select(&a, &idx).err().unwrap().to_string();
    assert!(e.contains("index_select") && e.contains("idx[1] = 5"), "{e}");
    let e = ops::index_select(&a, &t(vec![0.0], &[1])).err().unwrap().to_string();
    assert!(e.contains("index_select") && e.contains("F32"), "{e}");
    let logits = t(vec![0.0; 6], &[2, 3]);
    let labels = Tensor::from_i32(vec![1, 3], [2], Device::Cpu).unwrap();
    let e = ops::cross_entropy(&logits, &labels).err().unwrap().to_string();
    assert!(e.contains("cross_entropy") && e.contains("row 1") && e.contains("label 3"), "{e}");
    let e = Tensor::from_f32(vec![0.0; 5], [2, 3], Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("5 elements") && e.contains("[2, 3]"), "{e}");
}

#[test]
fn cuda_without_a_usable_device_is_a_clear_error() {
    if let Ok(n) = actial::cuda::available() {
        // A GPU machine: the device opens, and an ordinal past the last one is refused.
        assert_eq!(Device::parse("cuda").unwrap(), Device::Cuda(0));
        let e = Device::parse(&format!("cuda:{n}")).err().unwrap().to_string();
        assert!(e.contains(&format!("cuda:{n}")) && e.contains("--device cpu"), "{e}");
        return;
    }
    // No kernels in this build, or no driver / GPU on this machine: the error says
    // which device, why, and what to use instead.
    let why = actial::cuda::available().unwrap_err();
    let e = Device::parse("cuda").err().unwrap().to_string();
    assert!(e.contains("cuda:0") && e.contains("--device cpu"), "{e}");
    assert!(e.contains(&why) || e.contains("nvcc"), "{e} should say why: {why}");
    assert!(Tensor::zeros([2], DType::F32, Device::Cuda(0)).is_err());
    assert!(t(vec![1.0], &[1]).to_device(Device::Cuda(0)).is_err());
    assert!(Device::parse("tpu").is_err());
    assert_eq!(Device::parse("cpu").unwrap(), Device::Cpu);
}

#[test]
fn cross_entropy_by_hand() {
    // Row 0: logits [0, ln 3] label 1 → loss = ln(1 + 3) − ln 3 = ln(4/3).
    // Row 1: ignored. Row 2: [ln 2, 0] label 1 → ln 3. Mean over 2 tokens.
    let logits = t(vec![0.0, 3f32.ln(), 5.0, 5.0, 2f32.ln(), 0.0], &[3, 2]);
    let labels = Tensor::from_i32(vec![1, -100, 1], [3], Device::Cpu).unwrap();
    let ce = ops::cross_entropy(&logits, &labels).unwrap();
    let want = ((4.0f64 / 3.0).ln() + 3f64.ln()) / 2.0;
    assert_eq!(ce.tokens, 2);
    assert!((ce.loss as f64 - want).abs() < 1e-6, "{} vs {want}", ce.loss);
}

/// The strided-copy plans that CUDA's permute / narrow / cat launch, run through
/// the kernel's loop on the host, give exactly the CPU layout ops' elements (so
/// the index math is checked on machines without a GPU).
#[test]
fn strided_copy_plans_reproduce_the_cpu_layout_ops() {
    use actial::cuda::strided;
    let dims = [3usize, 4, 5, 2];
    let n: usize = dims.iter().product();
    let x = Tensor::from_f32((0..n).map(|i| i as f32).collect(), dims, Device::Cpu).unwrap();
    let xs = x.to_vec_f32().unwrap();
    let run = |plan: &strided::CopyPlan, out_len: usize| {
        let mut out = vec![f32::NAN; out_len];
        strided::emulate(&xs, &mut out, plan);
        out
    };
    for (dim, start, len) in [(1, 1, 2), (2, 4, 1), (3, 1, 1), (0, 2, 1), (2, 0, 5)] {
        let plan = strided::narrow(&dims, dim, start, len);
        let want = x.narrow(dim, start, len).unwrap();
        assert_eq!(plan.dims, want.dims(), "narrow({dim}, {start}, {len}) shape");
        assert_eq!(run(&plan, want.numel()), want.to_vec_f32().unwrap(), "narrow({dim}, {start}, {len})");
    }
    for perm in [[3usize, 0, 2, 1], [0, 1, 2, 3], [1, 0, 3, 2], [2, 3, 1, 0]] {
        let plan = strided::permute(&dims, &perm);
        let want = x.permute(&perm).unwrap();
        assert_eq!(plan.dims, want.dims(), "permute {perm:?} shape");
        assert_eq!(run(&plan, want.numel()), want.to_vec_f32().unwrap(), "permute {perm:?}");
    }
    for dim in 0..4 {
        let a = x.narrow(dim, 0, 1).unwrap();
        let b = x.clone();
        let want = Tensor::cat(&[&a, &b, &a], dim).unwrap();
        let (out_dims, plans) = strided::cat(&[a.dims(), b.dims(), a.dims()], dim);
        assert_eq!(out_dims, want.dims(), "cat dim {dim} shape");
        let mut out = vec![f32::NAN; want.numel()];
        for (part, plan) in [&a, &b, &a].iter().zip(&plans) {
            strided::emulate(&part.to_vec_f32().unwrap(), &mut out, plan);
        }
        assert_eq!(out, want.to_vec_f32().unwrap(), "cat dim {dim}");
    }
}
