//! Truncated SVD on real weights: all-MiniLM-L6-v2 (fetched by
//! `scripts/fetch-testdata.sh`). Reference values come from numpy:
//! `np.linalg.svd(W.astype(np.float64), compute_uv=False)`.

use std::path::PathBuf;

use ndarray::Array2;
use safetensors::SafeTensors;
use tensorpress_lowrank::{factorize, rank_for_energy, reconstruction_error, RankSelection};
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

fn weight(name: &str) -> Array2<f32> {
    let bytes = std::fs::read(minilm_file()).expect("read model.safetensors");
    let st = SafeTensors::deserialize(&bytes).expect("parse model.safetensors");
    let t = st.tensor(name).expect("tensor present");
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    let view = TensorView::new(DType::F32, t.shape(), t.data()).expect("consistent view");
    view.to_f32()
        .expect("decode")
        .into_dimensionality()
        .expect("2-D weight")
}

#[test]
fn energy_rank_and_eckart_young_on_minilm() {
    // (name, numpy's rank for 90% energy, numpy's top singular value)
    for (name, r90, s0) in [
        (
            "encoder.layer.0.attention.self.query.weight",
            144,
            6.1249901,
        ),
        (
            "encoder.layer.0.intermediate.dense.weight",
            248,
            11.17588752,
        ),
    ] {
        let w = weight(name);
        let f = factorize(w.view(), RankSelection::Energy(0.9)).unwrap();
        assert_eq!(f.rank(), r90, "{name}");
        assert_eq!(rank_for_energy(f.singular_values(), 0.9).unwrap(), r90);
        assert!(
            (f64::from(f.singular_values()[0]) - s0).abs() < 1e-4 * s0,
            "{name}"
        );
        assert!(f.retained_energy() >= 0.9);
        let e = reconstruction_error(w.view(), f.reconstruct().view()).unwrap();
        assert!(
            (e.relative - f.predicted_relative_error()).abs() < 1e-4,
            "{name}: measured {} vs Eckart–Young {}",
            e.relative,
            f.predicted_relative_error()
        );
        assert!(e.relative <= 0.1f64.sqrt() + 1e-6);
    }
}
