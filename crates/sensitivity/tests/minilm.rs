//! Spectral metrics of real weights: all-MiniLM-L6-v2 (fetched by
//! `scripts/fetch-testdata.sh`), against numpy in f64:
//! `s = np.linalg.svd(W.astype(np.float64), compute_uv=False)`,
//! `p = s / s.sum()`, effective rank `exp(-(p * log p).sum())`,
//! stable rank `(s**2).sum() / s[0]**2`, nuclear norm `s.sum()`.

use std::path::PathBuf;

use ndarray::Array2;
use safetensors::SafeTensors;
use tensorpress_sensitivity::spectral_metrics;
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
    let view = TensorView::new(DType::F32, t.shape(), t.data()).expect("consistent view");
    view.to_f32()
        .expect("decode")
        .into_dimensionality()
        .expect("2-D weight")
}

#[test]
fn spectral_metrics_match_numpy_on_minilm() {
    // (name, effective rank, stable rank, nuclear norm)
    for (name, erank, stable, nuclear) in [
        (
            "encoder.layer.0.attention.self.query.weight",
            260.83869260055985,
            35.815560056500075,
            535.3398520427045,
        ),
        (
            "encoder.layer.0.intermediate.dense.weight",
            340.88922298312264,
            19.579509593146103,
            843.4931148612361,
        ),
    ] {
        let m = spectral_metrics(weight(name).view()).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * b;
        assert!(
            close(m.effective_rank, erank),
            "{name}: {} vs {erank}",
            m.effective_rank
        );
        assert!(
            close(m.stable_rank, stable),
            "{name}: {} vs {stable}",
            m.stable_rank
        );
        assert!(
            close(m.nuclear_norm, nuclear),
            "{name}: {} vs {nuclear}",
            m.nuclear_norm
        );
    }
}
