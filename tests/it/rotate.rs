//! `rotate_llama` on SmolLM2-135M (hidden 576 = 12·12·4, 9 query heads over
//! 3 key/value heads of 64): the rotated model computes what the original
//! computes, RTN rounds its weights with less error (though on this model
//! that does not buy a lower perplexity than the unrotated model's: see
//! below), and its GGUF and Hugging Face exports reload as the in-memory
//! model.
//!
//! Perplexity is llama.cpp's, on 512-token windows of the State of the Union
//! addresses 2017–2021; `ROTATE_EVAL_CHUNKS` sets how many windows (default 2).

use std::sync::Arc;

use tensorpress::compress::{
    compress_llama, fold_llama_norms, merge_reports, parse_scheme, rotate_llama, write_gguf,
    write_hf_checkpoint, CompressOptions, CompressReport, ExportFormat, ExportOptions,
    GgufExportOptions, RotateOptions,
};
use tensorpress::io::export::FloatDType;
use tensorpress::io::gguf::GgufFile;
use tensorpress::io::testdata;
use tensorpress::models::eval::{perplexity, PerplexityConfig};
use tensorpress::models::llama::LlamaModel;
use tensorpress::models::tokenizer::TextTokenizer;
use tensorpress::models::weights::LoadOptions;
use tensorpress::quant::ggml::{GgmlRtn, GgmlType};

use crate::common::max_gap;

const DATA: &str = "test data missing: run scripts/fetch-testdata.sh";

struct Setup {
    path: std::path::PathBuf,
    gguf: GgufFile,
    eval: Vec<u32>,
    config: PerplexityConfig,
}

fn setup() -> Setup {
    let path = testdata::smollm2_gguf().expect(DATA);
    let gguf = GgufFile::open(&path).unwrap();
    let tokenizer = TextTokenizer::from_gguf(&gguf).unwrap();
    let text = testdata::sotu_text(2017..=2021).expect(DATA);
    let eval = tokenizer
        .encode(text.strip_suffix('\n').unwrap_or(&text))
        .unwrap();
    let chunks = std::env::var("ROTATE_EVAL_CHUNKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let config = PerplexityConfig::with_ctx(512).max_chunks(chunks);
    Setup {
        path,
        gguf,
        eval,
        config,
    }
}

fn load(s: &Setup) -> LlamaModel {
    LlamaModel::from_gguf(&s.gguf, LoadOptions::default()).unwrap()
}

fn ppl(s: &Setup, m: &LlamaModel) -> f64 {
    perplexity(m, &s.eval, &s.config, &mut |_, _| {})
        .unwrap()
        .perplexity
}

fn rotated(s: &Setup) -> (LlamaModel, CompressReport) {
    let mut m = load(s);
    let mut report = CompressReport::new();
    rotate_llama(&mut m, &RotateOptions::default(), &mut report).unwrap();
    (m, report)
}

/// Largest |a − b| over the logits of the first 128 evaluation tokens.
fn logit_gap(s: &Setup, a: &LlamaModel, b: &LlamaModel) -> f32 {
    let tokens = &s.eval[..128];
    max_gap(&a.logits(tokens, 0).unwrap(), &b.logits(tokens, 0).unwrap())
}

fn rtn_w4_ch(model: &mut LlamaModel) -> CompressReport {
    let scheme = parse_scheme("rtn-w4-ch").unwrap();
    let options = CompressOptions::with_method(scheme.method);
    compress_llama(model, &[], &options, &mut |_| {}).unwrap()
}

/// What QuaRot's claim looks like on SmolLM2. The rotation lowers RTN's
/// weight error and repairs the damage that folding the RMSNorm weights does,
/// but on this model (weight-only RTN, per-channel int4) the rotated model
/// still ends *above* the unrotated one (45 against 77 on two windows; see
/// `rotate_llama`'s docs): folding `γ` exposes the weights' rounding noise to
/// the normalized activations before `γ` damps their outlier channels. Both
/// figures are printed; the test asserts what holds.
#[test]
fn rotation_keeps_the_model_and_lowers_rtn_weight_error() {
    let s = setup();
    let base = load(&s);
    let (rot, _) = rotated(&s);
    // The rotation is exact in real arithmetic: the logits move by float
    // rounding only (perplexity is then the same to 1e-3 or better, checked
    // when this test evaluated both).
    let gap = logit_gap(&s, &base, &rot);
    println!("rotated: largest logit gap {gap:.2e}");
    assert!(gap < 2e-2, "logits moved by {gap}");

    let mean_error = |r: &CompressReport| {
        r.layers.iter().map(|l| l.weight_error).sum::<f64>() / r.layers.len() as f64
    };
    let mut plain = base;
    let e_plain = mean_error(&rtn_w4_ch(&mut plain));
    let mut folded = load(&s);
    fold_llama_norms(&mut folded, &mut CompressReport::new()).unwrap();
    let e_folded = mean_error(&rtn_w4_ch(&mut folded));
    let mut rot_q = rot;
    let e_rot = mean_error(&rtn_w4_ch(&mut rot_q));
    let (p_plain, p_folded, p_rot_q) = (ppl(&s, &plain), ppl(&s, &folded), ppl(&s, &rot_q));
    println!(
        "rtn-w4-ch perplexity (mean relative weight error): unrotated {p_plain:.4} ({e_plain:.3e}), \
         norms folded {p_folded:.4} ({e_folded:.3e}), rotated {p_rot_q:.4} ({e_rot:.3e})"
    );
    assert!(e_rot < 0.9 * e_plain, "{e_rot} vs {e_plain}");
    assert!(e_rot < 0.9 * e_folded, "{e_rot} vs {e_folded}");
    assert!(
        p_rot_q < p_folded,
        "rotation should repair folding: {p_rot_q} ≥ {p_folded}"
    );
}

#[test]
fn rotated_exports_reload_as_the_in_memory_model() {
    let s = setup();
    let (mut m, rotation) = rotated(&s);

    // Hugging Face folder, every tensor f32: the rotation's float tensors.
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    let options = ExportOptions {
        format: ExportFormat::Dequantized,
        dtype: FloatDType::F32,
    };
    write_hf_checkpoint(&s.path, &rotation, &options, &hf).unwrap();
    let config = std::fs::read_to_string(hf.join("config.json")).unwrap();
    assert!(
        config.contains("\"tie_word_embeddings\": false"),
        "{config}"
    );
    let back = LlamaModel::from_hf_dir(&hf, LoadOptions::default()).unwrap();
    let gap = logit_gap(&s, &m, &back);
    assert!(gap < 1e-3, "HF reload: logits moved by {gap}");

    // GGUF: the rotated model with Q8_0 layers (embedding and the untied
    // head kept f32), which the in-memory model then computes exactly.
    let q8 = CompressOptions::ggml(Arc::new(GgmlRtn::new(GgmlType::Q8_0)));
    let quantized = compress_llama(&mut m, &[], &q8, &mut |_| {}).unwrap();
    let report = merge_reports(rotation, quantized);
    assert_eq!(report.quantized.len(), 30 * 7);
    assert!(!report
        .replaced
        .contains_key("model.layers.0.self_attn.q_proj.weight"));
    let path = dir.path().join("rotated-q8_0.gguf");
    let gguf_options = GgufExportOptions::default()
        .token_embedding_type(GgmlType::F32)
        .output_type(GgmlType::F32);
    let summary = write_gguf(&s.gguf, &report, &gguf_options, &path).unwrap();
    assert_eq!(summary.compressed, 30 * 7);
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(
        file.tensor("output.weight").unwrap().ggml_type(),
        GgmlType::F32
    );
    let back = LlamaModel::from_gguf(&file, LoadOptions::default()).unwrap();
    let gap = logit_gap(&s, &m, &back);
    assert!(gap < 1e-4, "GGUF reload: logits moved by {gap}");
}
