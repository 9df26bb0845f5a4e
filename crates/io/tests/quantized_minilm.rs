//! A real weight through every integer export: all-MiniLM-L6-v2's first
//! feed-forward layer (`[1536, 384]`, with its bias) quantized with RTN,
//! written as compressed-tensors, GPTQ and dequantized safetensors, read back,
//! and compared with what was written.

use ndarray::{Array1, Array2};
use serde_json::json;
use tensorpress_io::export::{
    CompressedTensorsWriter, CtPacking, DequantizedWriter, FloatDType, GptqWriter, ZeroFormat,
};
use tensorpress_io::import::{QuantizedCheckpoint, QuantizedFormat};
use tensorpress_io::safetensors::SafetensorsModel;
use tensorpress_io::testdata;
use tensorpress_quant_core::{QuantSpec, QuantizedTensor, Rtn, WeightQuantizer};

const LAYER: &str = "encoder.layer.0.intermediate.dense";

/// The layer's weight `[1536, 384]` and bias `[1536]`, as f32.
fn minilm_layer() -> (Array2<f32>, Array1<f32>) {
    let dir =
        testdata::minilm_dir().unwrap_or_else(|e| panic!("{e} (run scripts/fetch-testdata.sh)"));
    let m = SafetensorsModel::open(dir).unwrap();
    let w = m.to_f32(&format!("{LAYER}.weight")).unwrap();
    let b = m.to_f32(&format!("{LAYER}.bias")).unwrap();
    (
        w.into_dimensionality().unwrap(),
        b.into_dimensionality().unwrap(),
    )
}

/// The same codes and zero points with scales rounded to `dtype`, which is
/// what a file with `dtype` scales holds.
fn with_scales_in(q: &QuantizedTensor, dtype: FloatDType) -> QuantizedTensor {
    let [rows, cols] = q.shape();
    QuantizedTensor::new(
        *q.spec(),
        rows,
        cols,
        q.codes().to_vec(),
        q.scales().mapv(|s| dtype.round(s)),
        q.zeros().clone(),
        q.g_idx().map(<[u32]>::to_vec),
    )
    .unwrap()
}

/// `‖a − b‖ / ‖b‖`.
fn relative_error(a: &Array2<f32>, b: &Array2<f32>) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (num / den).sqrt()
}

#[test]
fn minilm_layer_round_trips_through_every_export() {
    let (w, bias) = minilm_layer();
    assert_eq!(w.dim(), (1536, 384));
    let specs = [
        (QuantSpec::int(4).group(128).asymmetric(), 0.11),
        (QuantSpec::int(3).group(32), 0.22),
        (QuantSpec::int(8).channel(), 0.009),
        (QuantSpec::int(2).group(64).asymmetric(), 0.5),
    ];
    for (spec, max_error) in specs {
        let q = Rtn::new(spec).quantize(w.view(), None).unwrap();
        // RTN on a real weight (figures: 0.103, 0.208, 0.0076, 0.462): the
        // error falls with the bit width.
        let err = relative_error(&q.dequantize(), &w);
        eprintln!("{spec:?}: relative RTN error {err:.4}");
        assert!(err < max_error, "{spec:?}: relative error {err}");

        // compressed-tensors with f32 scales: the identity.
        let dir = tempfile::tempdir().unwrap();
        let mut ct = CompressedTensorsWriter::new().float_dtype(FloatDType::F32);
        ct.add_quantized(LAYER, &q, Some(bias.view())).unwrap();
        ct.write_dir(dir.path(), &json!({"model_type": "bert"}))
            .unwrap();
        let ckpt = QuantizedCheckpoint::open(dir.path()).unwrap();
        assert_eq!(
            ckpt.format(),
            QuantizedFormat::CompressedTensors(CtPacking::Dense)
        );
        assert_eq!(ckpt.modules(), [LAYER]);
        assert_eq!(ckpt.layer(LAYER).unwrap(), q, "{spec:?}");
        assert_eq!(ckpt.bias(LAYER).unwrap(), Some(bias.clone()));

        // compressed-tensors with bf16 scales: the scales round, nothing else.
        let dir = tempfile::tempdir().unwrap();
        let mut ct = CompressedTensorsWriter::new().float_dtype(FloatDType::BF16);
        ct.add_quantized(LAYER, &q, None).unwrap();
        ct.write_dir(dir.path(), &json!({"model_type": "bert"}))
            .unwrap();
        let back = QuantizedCheckpoint::open(dir.path())
            .unwrap()
            .layer(LAYER)
            .unwrap();
        assert_eq!(back, with_scales_in(&q, FloatDType::BF16), "{spec:?}");

        // GPTQ v1: f16 scales; the codes and zero points survive exactly.
        let dir = tempfile::tempdir().unwrap();
        let mut gptq = GptqWriter::new();
        gptq.add_quantized(LAYER, &q, Some(bias.view())).unwrap();
        gptq.write_dir(dir.path(), &json!({"model_type": "bert"}))
            .unwrap();
        let ckpt = QuantizedCheckpoint::open(dir.path()).unwrap();
        assert_eq!(ckpt.format(), QuantizedFormat::Gptq(ZeroFormat::V1));
        let back = ckpt.layer(LAYER).unwrap();
        let expect = with_scales_in(&q, FloatDType::F16);
        assert_eq!(back.codes(), expect.codes(), "{spec:?}");
        assert_eq!(back.zeros(), expect.zeros(), "{spec:?}");
        assert_eq!(back.dequantize(), expect.dequantize(), "{spec:?}");
        let b16 = ckpt.bias(LAYER).unwrap().unwrap();
        assert_eq!(b16, bias.mapv(|x| FloatDType::F16.round(x)));

        // Dequantized f16: the dequantized weight, rounded once.
        let dir = tempfile::tempdir().unwrap();
        let mut dq = DequantizedWriter::new(FloatDType::F16);
        dq.add_quantized(LAYER, &q, Some(bias.view())).unwrap();
        dq.write_dir(dir.path(), &json!({"model_type": "bert"}))
            .unwrap();
        let m = SafetensorsModel::open(dir.path()).unwrap();
        let stored = m.to_f32(&format!("{LAYER}.weight")).unwrap();
        let expect = q.dequantize().mapv(|x| FloatDType::F16.round(x));
        assert_eq!(stored, expect.into_dyn(), "{spec:?}");
    }
}
