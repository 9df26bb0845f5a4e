//! A compressed SmolLM2 written as compressed-tensors and GPTQ folders
//! reloads as the compressed model (and on the int4 kernels); export errors
//! leave nothing behind.

use std::sync::Arc;

use tensorpress::compress::{compress_llama, CompressOptions, LayerFilter};
use tensorpress::models::llama::LlamaModel;
use tensorpress::models::weights::LoadOptions;
use tensorpress::quant::{QuantSpec, Rtn};
use tensorpress::Error;

use crate::common::max_gap;

#[test]
fn exports_of_smollm2_reload_as_the_compressed_model() {
    use tensorpress::compress::{write_hf_checkpoint, ExportFormat, ExportOptions};
    use tensorpress::io::export::FloatDType;
    use tensorpress::io::gguf::GgufFile;
    use tensorpress::io::testdata;

    let path = testdata::smollm2_gguf().expect("test data: run scripts/fetch-testdata.sh");
    let gguf = GgufFile::open(&path).unwrap();
    let mut m = LlamaModel::from_gguf(&gguf, LoadOptions::default()).unwrap();
    // Only block 3 (and its query/key rows, whose order GGUF permutes), to keep the test short.
    let mut options = CompressOptions::new(Arc::new(Rtn::new(QuantSpec::int(4).group(64))), false);
    options.targets = LayerFilter::new(["model.layers.3.*"], ["lm_head"]).unwrap();
    let report = compress_llama(&mut m, &[], &options, &mut |_| {}).unwrap();
    assert_eq!(report.layers.len(), 7);
    let tokens = [1u32, 504, 3136, 282, 260, 1345, 28, 5346, 30];
    let want = m.logits(&tokens, 0).unwrap();
    for format in [ExportFormat::CompressedTensors, ExportFormat::Gptq] {
        let dir = tempfile::tempdir().unwrap();
        let opts = ExportOptions {
            format,
            dtype: FloatDType::F32,
        };
        let written = write_hf_checkpoint(&path, &report, &opts, dir.path()).unwrap();
        assert!(
            written.bits_per_weight() > 20.0,
            "f32 passthrough dominates"
        );
        let back = LlamaModel::from_hf_dir(dir.path(), LoadOptions::default()).unwrap();
        let got = back.logits(&tokens, 0).unwrap();
        let diff = max_gap(&got, &want);
        // GPTQ stores f16 scales; compressed-tensors keeps f32 ones exactly.
        let tol = if format == ExportFormat::Gptq {
            2e-2
        } else {
            1e-3
        };
        assert!(diff < tol, "{format:?}: {diff}");
        // The int4 layers of the folder run on the kernels, straight from the file.
        let (k, kr) = tensorpress::compress::load_llama_kernels(
            dir.path(),
            LoadOptions::default(),
            tensorpress::models::linear::KernelActivations::F32,
        )
        .unwrap();
        assert_eq!(kr.attached.len(), 7, "{format:?}: {kr:?}");
        assert!(kr.attached.iter().all(|n| n.starts_with("model.layers.3.")));
        let diff = max_gap(&k.logits(&tokens, 0).unwrap(), &got);
        assert!(diff < 1e-3, "{format:?} on the kernels: {diff}");
    }
    // compressed-tensors cannot hold groups that do not tile the 576-wide rows.
    let mut m = LlamaModel::from_gguf(&gguf, LoadOptions::default()).unwrap();
    let mut options = CompressOptions::new(Arc::new(Rtn::new(QuantSpec::int(4).group(128))), false);
    options.targets = LayerFilter::new(["model.layers.0.self_attn.q_proj"], ["lm_head"]).unwrap();
    let report = compress_llama(&mut m, &[], &options, &mut |_| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = write_hf_checkpoint(
        &path,
        &report,
        &ExportOptions::new(ExportFormat::CompressedTensors),
        dir.path(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("q_proj"), "{err}");
    assert!(!dir.path().join("config.json").exists(), "nothing written");
    // A folder that holds files is never overwritten.
    std::fs::write(dir.path().join("keep.txt"), b"mine").unwrap();
    let gptq = ExportOptions::new(ExportFormat::Gptq);
    assert!(matches!(
        write_hf_checkpoint(&path, &report, &gptq, dir.path()),
        Err(Error::OutputExists { .. })
    ));
    assert_eq!(std::fs::read(dir.path().join("keep.txt")).unwrap(), b"mine");
    // No staging folder is left behind by either failure.
    let parent = dir.path().parent().unwrap();
    let name = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(std::fs::read_dir(parent).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with(&format!(".{name}.partial"))));
}
