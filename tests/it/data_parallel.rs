//! `compress_llama_on` over thread ranks: each rank calibrates on its share
//! of the windows, the layer solves are split between ranks and shared, and
//! every rank returns what one process computes.

use std::sync::Arc;

use tensorpress::compress::{compress_llama, CompressOptions, LayerFilter, Method};
use tensorpress::quant::ggml::{GgmlRtn, GgmlType};
use tensorpress::quant::{Gptq, QuantSpec};
use tensorpress::Error;

use crate::common::{model, windows};

/// Runs `compress_llama_on` on `ranks` thread ranks, one fresh model each.
fn on_thread_ranks(
    ranks: usize,
    cal: &[Vec<u32>],
    options: &CompressOptions,
) -> Vec<Result<tensorpress::compress::CompressReport, Box<Error>>> {
    use tensorpress::codecs::grad::ThreadComm;
    use tensorpress::compress::compress_llama_on;
    let comms = ThreadComm::group(ranks).unwrap();
    std::thread::scope(|s| {
        let jobs: Vec<_> = comms
            .iter()
            .map(|comm| {
                s.spawn(move || {
                    compress_llama_on(&mut model(), cal, options, comm, &mut |_| {})
                        .map_err(Box::new)
                })
            })
            .collect();
        jobs.into_iter().map(|j| j.join().unwrap()).collect()
    })
}

/// Data-parallel compression over thread ranks (Hessians summed, the layer
/// solves split between ranks and shared) returns, on every rank, what one
/// process computes: codes, GGML blocks, pruned weights and masks, adapters
/// and every layer's figures.
#[test]
fn data_parallel_compression_equals_one_process() {
    use tensorpress::compress::Compensation;
    use tensorpress::sparsity::{SparsityTarget, Wanda};
    let cal = windows();
    let mlp = LayerFilter::new(["*.mlp.*"], Vec::<String>::new()).unwrap();
    let gptq = CompressOptions::new(Arc::new(Gptq::new(QuantSpec::int(3).group(32))), true);
    let mut pruned = gptq.clone().override_layers(
        mlp.clone(),
        Method::Prune(Arc::new(Wanda::new(SparsityTarget::NM { n: 2, m: 4 }))),
    );
    pruned.compensation = Some(Compensation::eora(2));
    let ggml = CompressOptions::ggml(Arc::new(GgmlRtn::new(GgmlType::Q8_0))).override_layers(
        mlp,
        Method::Ggml(Arc::new(GgmlRtn::new(GgmlType::IQ4NL).with_importance())),
    );
    for (label, options) in [("gptq", &gptq), ("wanda + eora", &pruned), ("ggml", &ggml)] {
        let one = compress_llama(&mut model(), &cal, options, &mut |_| {}).unwrap();
        for ranks in [2, 3] {
            for (rank, r) in on_thread_ranks(ranks, &cal, options)
                .into_iter()
                .enumerate()
            {
                let r = r.unwrap();
                let at = format!("{label}, {ranks} ranks, rank {rank}");
                assert_eq!(r.quantized.len(), one.quantized.len(), "{at}");
                for (name, q) in &one.quantized {
                    assert_eq!(q, &r.quantized[name], "{at}: {name}");
                }
                assert_eq!(r.masks, one.masks, "{at}");
                assert_eq!(r.adapters, one.adapters, "{at}");
                assert_eq!(r.replaced, one.replaced, "{at}");
                assert_eq!(r.layers.len(), one.layers.len(), "{at}");
                for (a, b) in one.layers.iter().zip(&r.layers) {
                    assert_eq!(a.name, b.name, "{at}");
                    assert_eq!(a.output_error, b.output_error, "{at}: {}", a.name);
                    assert_eq!(a.weight_error, b.weight_error, "{at}: {}", a.name);
                    assert_eq!(a.bits_per_weight, b.bits_per_weight, "{at}: {}", a.name);
                }
            }
        }
        if label == "wanda + eora" {
            assert!(!one.masks.is_empty() && !one.adapters.is_empty());
        }
    }
    // One rank's solve fails (Q4_K blocks need 256 columns; down_proj has
    // 128 and is rank 0's whole share): that rank returns its own error, the
    // other names it instead of waiting in a collective.
    let down = LayerFilter::new(["*.down_proj"], Vec::<String>::new()).unwrap();
    let bad = CompressOptions::ggml(Arc::new(GgmlRtn::new(GgmlType::Q8_0).with_importance()))
        .override_layers(
            down,
            Method::Ggml(Arc::new(GgmlRtn::new(GgmlType::Q4K).with_importance())),
        );
    let results = on_thread_ranks(2, &cal, &bad);
    let [Err(own), Err(other)] = &results[..] else {
        panic!("both ranks must fail");
    };
    assert!(!matches!(**own, Error::DataParallel { .. }), "{own}");
    assert!(
        matches!(**other, Error::DataParallel { .. })
            && other.to_string().contains("rank 0 failed"),
        "{other}"
    );
    // More ranks than windows: a typed error on every rank.
    for err in on_thread_ranks(cal.len() + 1, &cal, &gptq) {
        match err {
            Err(e) => assert!(matches!(*e, Error::DataParallel { .. }), "{e}"),
            Ok(_) => panic!("more ranks than windows must fail"),
        }
    }
}
