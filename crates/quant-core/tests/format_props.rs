//! Property tests for every number format: quantize→dequantize error within
//! half a step inside the range, code round trips, nearest rounding, and
//! typed errors for bad specs and tensors, and LLM-FP4's search never losing to
//! absmax E2M1.

use ndarray::Array2;
use proptest::prelude::*;
use tensorpress_quant_core::formats::{CodeGrid, FloatFormat, Grid, MxFormat, Specials};
use tensorpress_quant_core::int::GroupParams;
use tensorpress_quant_core::{
    Calibration, Error, Format, FpSearch, Gptq, Granularity, QuantSpec, QuantizedTensor, Rtn,
    WeightQuantizer,
};
use tensorpress_tensor::{Hessian, SeededRng};

/// Every non-integer format, with a spec that is valid for it.
fn specs() -> Vec<QuantSpec> {
    let mut v: Vec<QuantSpec> = FloatFormat::OCP
        .into_iter()
        .chain([
            FloatFormat::standard(1, 2).unwrap(),
            FloatFormat::standard(3, 0).unwrap(),
            FloatFormat::standard(2, 5).unwrap(),
        ])
        .flat_map(|f| [QuantSpec::float(f), QuantSpec::float(f).group(16)])
        .collect();
    v.push(QuantSpec::nf4());
    v.push(QuantSpec::nf4().group(16));
    v.extend(MxFormat::ALL.map(QuantSpec::mx));
    v.push(QuantSpec::nvfp4());
    v
}

fn element(format: Format) -> Option<FloatFormat> {
    match format {
        Format::Float(f) => Some(f),
        Format::Mx(m) => Some(m.element()),
        Format::Nvfp4 => Some(FloatFormat::E2M1),
        _ => None,
    }
}

/// Weights with a spread of magnitudes: normals times log-uniform factors.
fn weight(rows: usize, cols: usize, seed: u64, spread: f32) -> Array2<f32> {
    let mut rng = SeededRng::new(seed);
    Array2::from_shape_fn((rows, cols), |_| {
        rng.normal_f32() * (spread * rng.uniform_range_f32(-1.0, 1.0)).exp2() * 0.05
    })
}

/// The largest magnitude a group's parameters represent.
fn range_max(grid: &Grid, p: GroupParams) -> f32 {
    match *grid {
        Grid::Float(f) => f.max() * p.scale,
        Grid::Mx(m) => m.element().max() * p.scale,
        Grid::Nf4 => p.scale,
        Grid::Nvfp4 { global_scale } => 6.0 * p.scale * global_scale,
        Grid::Int(_) => f32::INFINITY,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn error_within_half_a_step_inside_the_range(
        which in 0usize..24,
        seed in 0u64..10_000,
        spread in 0.0f32..12.0,
    ) {
        let specs = specs();
        let spec = specs[which % specs.len()];
        let w = weight(4, 80, seed, spread);
        let q = Rtn::new(spec).quantize(w.view(), None).unwrap();
        let grid = q.grid();
        let d = q.dequantize();
        for r in 0..4 {
            for c in 0..80 {
                let p = q.params(r, q.group_of(c));
                let x = w[[r, c]];
                if x.abs() > range_max(&grid, p) {
                    // Saturated: clamped to the largest value.
                    prop_assert!((d[[r, c]].abs() - range_max(&grid, p)).abs() <= 1e-6 * x.abs());
                    continue;
                }
                let step = grid.step_at(x, p);
                let err = (d[[r, c]] - x).abs();
                prop_assert!(
                    err <= step / 2.0 * 1.0001 + f32::MIN_POSITIVE,
                    "{spec}: x {x:e} → {:e}, err {err:e}, step {step:e}", d[[r, c]]
                );
            }
        }
        // Only MX and NVFP4 scales can leave values above the range.
        if !matches!(spec.format, Format::Mx(_) | Format::Nvfp4) {
            for r in 0..4 {
                for c in 0..80 {
                    let p = q.params(r, q.group_of(c));
                    prop_assert!(w[[r, c]].abs() <= range_max(&grid, p) * 1.000_001);
                }
            }
        }
    }

    #[test]
    fn codes_round_trip_through_dequantize(
        which in 0usize..24,
        seed in 0u64..10_000,
    ) {
        let specs = specs();
        let spec = specs[which % specs.len()];
        let mut rng = SeededRng::new(seed);
        let (rows, cols) = (3, 64);
        let groups = spec.n_groups(cols).unwrap();
        let grid = Grid::new(&spec, Some(0.37));
        // Random finite, non-negative-zero codes and valid scales.
        let max_code = (1u32 << spec.bits()) - 1;
        let codes: Vec<u8> = (0..rows * cols)
            .map(|_| loop {
                let c = rng.below(u64::from(max_code) + 1) as u8;
                let ok = match element(spec.format) {
                    Some(f) => f.is_finite_code(c) && c != f.sign_mask(),
                    None => true,
                };
                if ok { break c; }
            })
            .collect();
        let scales = Array2::from_shape_fn((rows, groups), |_| {
            let s = (rng.uniform_range_f32(-6.0, 6.0)).exp2();
            match spec.format {
                Format::Mx(_) => 2f32.powi(s.log2().floor() as i32),
                Format::Nvfp4 => FloatFormat::E4M3.round_saturating(s),
                _ => s,
            }
        });
        let mut q = QuantizedTensor::new(
            spec, rows, cols, codes.clone(), scales, Array2::zeros((rows, groups)), None,
        ).unwrap();
        if spec.format == Format::Nvfp4 {
            q = q.with_global_scale(0.37).unwrap();
        }
        prop_assert_eq!(q.grid(), grid);
        let d = q.dequantize();
        for r in 0..rows {
            for c in 0..cols {
                let p = q.params(r, q.group_of(c));
                prop_assert_eq!(grid.quantize(d[[r, c]], p), codes[r * cols + c], "{} at ({}, {})", spec, r, c);
            }
        }
    }

    #[test]
    fn float_encoding_is_nearest(
        which in 0usize..8,
        x in prop::num::f32::NORMAL | prop::num::f32::SUBNORMAL | prop::num::f32::ZERO,
        scale_exp in -20i32..20,
    ) {
        let formats = [
            FloatFormat::E4M3, FloatFormat::E5M2, FloatFormat::E2M3, FloatFormat::E3M2,
            FloatFormat::E2M1, FloatFormat::standard(1, 2).unwrap(),
            FloatFormat::standard(4, 3).unwrap(), FloatFormat::new(4, 3, Specials::AllFinite).unwrap(),
        ];
        let f = formats[which];
        // Bring x near the format's range.
        let y = (x.abs().log2().fract() * 8.0 + scale_exp as f32 / 4.0).exp2().copysign(x);
        let y = if x == 0.0 { x } else { y };
        if y.abs() > f.max() { return Ok(()); }
        let v = f.decode(f.encode(y));
        let best = f.positive_values().iter().map(|&p| (p - y.abs()).abs()).fold(f32::INFINITY, f32::min);
        prop_assert_eq!((v - y).abs(), best, "{} {:e} → {:e}", f, y, v);
        prop_assert!((v - y).abs() <= f.step_at(y) / 2.0);
        prop_assert_eq!(v.is_sign_negative(), y.is_sign_negative());
    }

    #[test]
    fn fp_search_is_never_worse_than_absmax_e2m1(
        seed in 0u64..10_000,
        spread in 0.0f32..8.0,
        granularity in 0u8..3,
    ) {
        let w = weight(4, 64, seed, spread);
        let (search, absmax) = match granularity {
            0 => (FpSearch::new(4).tensor(), QuantSpec::float(FloatFormat::E2M1).tensor()),
            1 => (FpSearch::new(4).channel(), QuantSpec::float(FloatFormat::E2M1).channel()),
            _ => (FpSearch::new(4).group(16), QuantSpec::float(FloatFormat::E2M1).group(16)),
        };
        let sq = |q: &QuantizedTensor| {
            (&q.dequantize() - &w).mapv(|e| f64::from(e) * f64::from(e)).sum()
        };
        let plain = sq(&Rtn::new(absmax).quantize(w.view(), None).unwrap());
        let (q, report) = search.quantize_with_report(w.view(), None).unwrap();
        prop_assert_eq!(q.spec().granularity, absmax.granularity);
        prop_assert!(sq(&q) <= plain * (1.0 + 1e-12), "{}: {} > {}", q.spec(), sq(&q), plain);
        prop_assert!(report.candidates.iter().all(|&(_, e)| e >= report.error));
    }

    #[test]
    fn bad_specs_are_typed_errors(
        which in 0usize..24,
        group in prop::sample::select(vec![0usize, 8, 16, 32, 64]),
        granularity in 0u8..3,
        symmetric in any::<bool>(),
    ) {
        let specs = specs();
        let mut spec = specs[which % specs.len()];
        spec.granularity = match granularity {
            0 => Granularity::Tensor,
            1 => Granularity::Channel,
            _ => Granularity::Group(group),
        };
        spec.symmetric = symmetric;
        let result = spec.validate(128);
        let required = spec.format.required_granularity();
        match result {
            Ok(()) => {
                prop_assert!(symmetric);
                prop_assert!(required.is_none_or(|r| r == spec.granularity));
                prop_assert_ne!(spec.granularity, Granularity::Group(0));
            }
            Err(Error::InvalidGroupSize { group: 0, cols: 128 }) => {
                prop_assert_eq!(spec.granularity, Granularity::Group(0));
            }
            Err(Error::FormatGranularity { format, required: r, actual }) => {
                prop_assert_eq!(format, spec.format);
                prop_assert_eq!(Some(r), required);
                prop_assert_eq!(actual, spec.granularity);
            }
            Err(Error::AsymmetricFormat { format }) => {
                prop_assert!(!symmetric);
                prop_assert_eq!(format, spec.format);
            }
            Err(e) => prop_assert!(false, "unexpected error {}", e),
        }
        // Quantizers refuse the same specs.
        let w = weight(2, 128, 1, 1.0);
        prop_assert_eq!(Rtn::new(spec).quantize(w.view(), None).is_ok(), spec.validate(128).is_ok());
    }
}

#[test]
fn construction_rejects_what_the_format_cannot_store() {
    let ok = |spec: QuantSpec, codes: Vec<u8>, scales: Array2<f32>, zeros: Array2<f32>| {
        let g = scales.ncols();
        QuantizedTensor::new(spec, 1, codes.len(), codes, scales, zeros, None).map(|_| g)
    };
    let z = || Array2::zeros((1, 1));
    // E4M3's NaN code.
    assert!(matches!(
        ok(
            QuantSpec::float(FloatFormat::E4M3),
            vec![0x7f],
            Array2::ones((1, 1)),
            z()
        ),
        Err(Error::NonFiniteCode { code: 0x7f, .. })
    ));
    // E5M2's infinity.
    assert!(matches!(
        ok(
            QuantSpec::float(FloatFormat::E5M2),
            vec![0xfc],
            Array2::ones((1, 1)),
            z()
        ),
        Err(Error::NonFiniteCode { code: 0xfc, .. })
    ));
    // A 4-bit format's code past 15.
    assert!(matches!(
        ok(QuantSpec::nf4(), vec![16], Array2::ones((1, 1)), z()),
        Err(Error::CodeRange { code: 16, bits: 4 })
    ));
    // MX scales must be powers of two.
    assert!(matches!(
        ok(
            QuantSpec::mxfp4(),
            vec![1; 32],
            Array2::from_elem((1, 1), 0.75),
            z()
        ),
        Err(Error::InvalidScale {
            row: 0,
            group: 0,
            ..
        })
    ));
    assert!(ok(
        QuantSpec::mxfp4(),
        vec![1; 32],
        Array2::from_elem((1, 1), 0.5),
        z()
    )
    .is_ok());
    // NVFP4 block scales must be E4M3 values.
    assert!(matches!(
        ok(
            QuantSpec::nvfp4(),
            vec![1; 16],
            Array2::from_elem((1, 1), 0.3),
            z()
        ),
        Err(Error::InvalidScale { .. })
    ));
    assert!(ok(
        QuantSpec::nvfp4(),
        vec![1; 16],
        Array2::from_elem((1, 1), 0.3125),
        z()
    )
    .is_ok());
    // Negative or NaN scales, and zero points, for float formats.
    assert!(matches!(
        ok(
            QuantSpec::float(FloatFormat::E2M1),
            vec![1],
            Array2::from_elem((1, 1), -1.0),
            z()
        ),
        Err(Error::InvalidScale { .. })
    ));
    assert!(matches!(
        ok(
            QuantSpec::nf4(),
            vec![1],
            Array2::from_elem((1, 1), f32::NAN),
            z()
        ),
        Err(Error::InvalidScale { .. })
    ));
    assert!(matches!(
        ok(
            QuantSpec::nf4(),
            vec![1],
            Array2::ones((1, 1)),
            Array2::from_elem((1, 1), 8.0)
        ),
        Err(Error::ZeroPoint { .. })
    ));
    // MX blocks must be contiguous; the identity g_idx is fine.
    let g_idx: Vec<u32> = (0..64).map(|c| (c / 32) as u32).collect();
    let mut swapped = g_idx.clone();
    swapped.swap(0, 40);
    for (g, good) in [(g_idx, true), (swapped, false)] {
        let r = QuantizedTensor::new(
            QuantSpec::mxfp4(),
            1,
            64,
            vec![0; 64],
            Array2::ones((1, 2)),
            Array2::zeros((1, 2)),
            Some(g),
        );
        assert_eq!(r.is_ok(), good);
        if !good {
            assert!(matches!(
                r,
                Err(Error::NonContiguousGroups {
                    col: 0,
                    index: 1,
                    ..
                })
            ));
        }
    }
    // Only NVFP4 has a tensor scale, and it is positive.
    let q = QuantizedTensor::new(
        QuantSpec::nvfp4(),
        1,
        16,
        vec![1; 16],
        Array2::ones((1, 1)),
        Array2::zeros((1, 1)),
        None,
    )
    .unwrap();
    assert!(matches!(
        q.clone().with_global_scale(0.0),
        Err(Error::GlobalScale { .. })
    ));
    assert_eq!(q.with_global_scale(2.0).unwrap().dequantize()[[0, 0]], 1.0);
    let int = QuantizedTensor::new(
        QuantSpec::int(4),
        1,
        1,
        vec![1],
        Array2::ones((1, 1)),
        Array2::zeros((1, 1)),
        None,
    )
    .unwrap();
    assert!(matches!(
        int.with_global_scale(2.0),
        Err(Error::GlobalScale { .. })
    ));
}

#[test]
fn bits_per_weight_counts_the_format_scales() {
    let w = weight(4, 128, 9, 2.0);
    let bpw = |spec: QuantSpec| {
        Rtn::new(spec)
            .quantize(w.view(), None)
            .unwrap()
            .bits_per_weight(16)
    };
    assert_eq!(bpw(QuantSpec::mxfp4()), 4.25);
    assert_eq!(bpw(QuantSpec::nvfp4()), 4.5 + 32.0 / 512.0);
    assert_eq!(bpw(QuantSpec::nf4()), 4.25);
    assert_eq!(bpw(QuantSpec::float(FloatFormat::E4M3)), 8.0 + 16.0 / 128.0);
}

/// Correlated inputs with uneven channel scales, as real activations have.
fn calibration(cols: usize, tokens: usize, seed: u64) -> (Array2<f32>, Calibration) {
    let mut rng = SeededRng::new(seed);
    let basis = rng.array_normal((cols / 4, cols));
    let mut x = rng.array_normal((tokens, cols / 4)).dot(&basis);
    for (j, mut c) in x.columns_mut().into_iter().enumerate() {
        c *= 0.2 + (j % 7) as f32;
    }
    let mut h = Hessian::new(cols);
    h.update(x.view()).unwrap();
    let cal = Calibration {
        hessian: Some(h.finalize(0.0).unwrap()),
        ..Default::default()
    };
    (x, cal)
}

#[test]
fn gptq_works_on_every_format() {
    let (x, cal) = calibration(128, 512, 5);
    let w = SeededRng::new(6).array_normal((16, 128));
    let out_err = |q: &QuantizedTensor| x.dot(&(&q.dequantize() - &w).t()).mapv(|e| e * e).sum();
    for spec in [
        QuantSpec::nf4(),
        QuantSpec::mxfp4(),
        QuantSpec::nvfp4(),
        QuantSpec::float(FloatFormat::E2M1).group(32),
        QuantSpec::mx(MxFormat::Fp6E3M2),
    ] {
        let rtn = Rtn::new(spec).quantize(w.view(), None).unwrap();
        let gptq = Gptq::new(spec).quantize(w.view(), Some(&cal)).unwrap();
        assert_eq!(gptq.global_scale(), rtn.global_scale(), "{spec}");
        let (eg, er) = (out_err(&gptq), out_err(&rtn));
        assert!(eg < 0.8 * er, "{spec}: gptq {eg} rtn {er}");
    }
    // Act-order keeps MX blocks contiguous only with static groups.
    let spec = QuantSpec::mxfp4();
    assert!(Gptq::new(spec)
        .act_order(true)
        .static_groups(true)
        .quantize(w.view(), Some(&cal))
        .is_ok());
    assert!(matches!(
        Gptq::new(spec)
            .act_order(true)
            .quantize(w.view(), Some(&cal)),
        Err(Error::NonContiguousGroups { .. })
    ));
}
