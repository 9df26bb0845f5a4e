//! Pruned SmolLM2 layers written in compressed-tensors' sparse layouts
//! (`sparse-24-bitmask` for 2:4, `sparse-bitmask` for unstructured) load
//! back in the runner as the pruned model.

use tensorpress::compress::{
    compress_llama, parse_scheme, write_hf_checkpoint, ExportFormat, ExportOptions, LayerFilter,
};
use tensorpress::io::export::{FloatDType, SparseLayout};
use tensorpress::io::gguf::GgufFile;
use tensorpress::io::import::QuantizedCheckpoint;
use tensorpress::io::testdata;
use tensorpress::models::llama::LlamaModel;
use tensorpress::models::weights::LoadOptions;

use crate::common::max_gap;

#[test]
fn sparse_smollm2_folders_load_in_the_runner_as_the_pruned_model() {
    let path = testdata::smollm2_gguf().expect("test data: run scripts/fetch-testdata.sh");
    let gguf = GgufFile::open(&path).unwrap();
    let tokens = [1u32, 504, 3136, 282, 260, 1345, 28, 5346, 30];
    for (scheme, layout) in [
        ("magnitude-2:4", SparseLayout::TwoFour),
        ("magnitude-50", SparseLayout::Bitmask),
    ] {
        let mut m = LlamaModel::from_gguf(&gguf, LoadOptions::default()).unwrap();
        let mut options = parse_scheme(scheme).unwrap().options();
        // Block 3 only, to keep the test short.
        options.targets = LayerFilter::new(["model.layers.3.*"], ["lm_head"]).unwrap();
        let report = compress_llama(&mut m, &[], &options, &mut |_| {}).unwrap();
        assert_eq!(report.layers.len(), 7);
        let want = m.logits(&tokens, 0).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let opts = ExportOptions {
            format: ExportFormat::CompressedTensors,
            dtype: FloatDType::F32,
        };
        write_hf_checkpoint(&path, &report, &opts, dir.path()).unwrap();
        let ckpt = QuantizedCheckpoint::open(dir.path()).unwrap();
        let sparse = ckpt.sparse_weights();
        assert_eq!(sparse.len(), 7, "{scheme}: {sparse:?}");
        assert!(sparse
            .iter()
            .all(|(n, &l)| n.starts_with("model.layers.3.") && l == layout));
        let back = LlamaModel::from_hf_dir(dir.path(), LoadOptions::default()).unwrap();
        let gap = max_gap(&back.logits(&tokens, 0).unwrap(), &want);
        assert!(gap < 1e-3, "{scheme}: {gap}");
    }
}
