//! GGML-grid GPTQ on real SmolLM2-135M layers (block 0, calibrated on State of
//! the Union text): its output error `tr(ΔW H ΔWᵀ)` is clearly below that of
//! llama.cpp's encoders with imatrix-style importance, for Q4_0 on every layer
//! and for Q3_K on the 1536-wide `down_proj`. (SmolLM2's weights sit on a
//! Q4_1 grid already, so Q4_1/Q4_K reproduce them almost exactly with or
//! without GPTQ: those types are no test.)
//!
//! Needs the test data: run `scripts/fetch-testdata.sh` first.

use std::collections::BTreeMap;
use std::sync::Arc;

use tensorpress::compress::{calibration_windows, compress_llama, CompressOptions, LayerFilter};
use tensorpress::io::gguf::GgufFile;
use tensorpress::io::testdata;
use tensorpress::models::llama::LlamaModel;
use tensorpress::models::tokenizer::TextTokenizer;
use tensorpress::models::weights::LoadOptions;
use tensorpress::quant::ggml::{GgmlQuantizer, GgmlRtn, GgmlType};
use tensorpress::quant::gptq::GgmlGptq;

/// llama.cpp's encoders, asking for calibration so that `compress_llama`
/// captures the Hessian and reports the output error even for types whose
/// encoder ignores the importance (Q4_0).
struct CalibratedRtn(GgmlRtn);

impl GgmlQuantizer for CalibratedRtn {
    fn ggml_type(&self) -> GgmlType {
        self.0.ty
    }
    fn needs_calibration(&self) -> bool {
        true
    }
    fn quantize(
        &self,
        w: ndarray::ArrayView2<'_, f32>,
        cal: Option<&tensorpress::quant::Calibration>,
    ) -> tensorpress::quant::Result<tensorpress::quant::ggml::GgmlTensor> {
        self.0.quantize(w, cal)
    }
}

/// Relative output error of every block-0 layer that `targets` selects.
fn errors(
    gguf: &GgufFile,
    calib: &[Vec<u32>],
    targets: &str,
    q: Arc<dyn GgmlQuantizer>,
) -> BTreeMap<String, f64> {
    let mut model = LlamaModel::from_gguf(gguf, LoadOptions::default()).unwrap();
    let mut options = CompressOptions::ggml(q);
    options.targets = LayerFilter::new([targets], ["lm_head"]).unwrap();
    let report = compress_llama(&mut model, calib, &options, &mut |_| {}).unwrap();
    report
        .layers
        .iter()
        .map(|l| (l.name.clone(), l.output_error.unwrap()))
        .collect()
}

#[test]
fn gptq_into_ggml_types_beats_importance_weighted_rtn_on_smollm2() {
    let path =
        testdata::smollm2_gguf().unwrap_or_else(|e| panic!("{e}: run scripts/fetch-testdata.sh"));
    let gguf = GgufFile::open(path).unwrap();
    let tokenizer = TextTokenizer::from_gguf(&gguf).unwrap();
    let text = testdata::sotu_text(1990..=1993).unwrap();
    let calib = calibration_windows(&tokenizer.encode(&text).unwrap(), 2, 512).unwrap();

    for (targets, ty) in [
        ("model.layers.0.*", GgmlType::Q4_0),
        ("model.layers.0.mlp.down_proj", GgmlType::Q3K),
    ] {
        let gptq = errors(&gguf, &calib, targets, Arc::new(GgmlGptq::new(ty)));
        let rtn = errors(
            &gguf,
            &calib,
            targets,
            Arc::new(CalibratedRtn(GgmlRtn::new(ty).with_importance())),
        );
        assert!(!gptq.is_empty());
        for (name, &e) in &gptq {
            let r = rtn[name];
            assert!(e < 0.8 * r, "{ty} {name}: gptq {e:.3e} rtn {r:.3e}");
        }
    }
}
