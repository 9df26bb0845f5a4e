//! LLM-FP4's search ([`FpSearch`]) on real weights: all-MiniLM-L6-v2
//! (fetched by `scripts/fetch-testdata.sh`). The search must never do worse
//! than plain absmax scaling to FP4 E2M1, and on real weights it does better.

use std::path::PathBuf;

use ndarray::Array2;
use safetensors::SafeTensors;
use tensorpress_quant_core::formats::SearchObjective;
use tensorpress_quant_core::{
    FloatFormat, Format, FpSearch, QuantSpec, QuantizedTensor, Rtn, WeightQuantizer,
};
use tensorpress_tensor::{DType, Tensor, TensorView};

fn minilm_file() -> PathBuf {
    let cache = std::env::var_os("TENSORPRESS_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/tensorpress")))
        .unwrap_or_else(|| PathBuf::from(".cache/tensorpress"));
    let file = cache.join("minilm/model.safetensors");
    assert!(
        file.is_file(),
        "test data missing: {} not found; run scripts/fetch-testdata.sh (or set TENSORPRESS_CACHE)",
        file.display()
    );
    file
}

fn weight(st: &SafeTensors<'_>, name: &str) -> Array2<f32> {
    let t = st.tensor(name).expect("tensor present");
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    let view = TensorView::new(DType::F32, t.shape(), t.data()).expect("consistent view");
    view.to_f32()
        .expect("decode")
        .into_dimensionality()
        .expect("2-D weight")
}

fn sq_err(q: &QuantizedTensor, w: &Array2<f32>) -> f64 {
    (&q.dequantize() - w)
        .mapv(|e| f64::from(e) * f64::from(e))
        .sum()
}

#[test]
fn search_beats_e2m1_absmax_on_minilm() {
    let bytes = std::fs::read(minilm_file()).expect("read model.safetensors");
    let st = SafeTensors::deserialize(&bytes).expect("parse model.safetensors");
    for name in [
        "encoder.layer.0.attention.self.query.weight",
        "encoder.layer.5.output.dense.weight",
    ] {
        let w = weight(&st, name);
        let search = FpSearch::new(4).objective(SearchObjective::Weight);
        for (search, absmax) in [
            (
                search.clone().channel(),
                QuantSpec::float(FloatFormat::E2M1).channel(),
            ),
            (
                search.clone().tensor(),
                QuantSpec::float(FloatFormat::E2M1).tensor(),
            ),
        ] {
            let plain = Rtn::new(absmax).quantize(w.view(), None).unwrap();
            let plain_err = sq_err(&plain, &w);
            let (q, report) = search.quantize_with_report(w.view(), None).unwrap();
            let err = sq_err(&q, &w);
            assert_eq!(q.spec().format, Format::Float(report.format), "{name}");
            assert_eq!(q.spec().granularity, absmax.granularity, "{name}");
            assert!(
                (err - report.error).abs() <= 1e-9 * err,
                "{name}: report {} vs measured {err}",
                report.error
            );
            let e2m1 = report
                .candidates
                .iter()
                .find(|(f, _)| *f == FloatFormat::E2M1)
                .expect("E2M1 is a candidate")
                .1;
            assert!(report.candidates.iter().all(|&(_, e)| e >= err));
            eprintln!(
                "{name}: search {} {err:.4e}, E2M1 searched {e2m1:.4e}, absmax {absmax} {plain_err:.4e}",
                q.spec()
            );
            // Absmax is a clip candidate of every group, and E2M1 a format
            // candidate: never worse than plain E2M1.
            assert!(err <= e2m1 && e2m1 <= plain_err * (1.0 + 1e-12), "{name}");
            // Clipping pays on real weights (their tails are long).
            assert!(err < 0.95 * plain_err, "{name}: {err} vs {plain_err}");
        }
    }
}
