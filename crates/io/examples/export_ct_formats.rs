//! Writes compressed-tensors folders in every layout beyond `pack-quantized`
//! (FP8 `float-`/`naive-quantized`, `int-quantized`, NVFP4, MXFP4, MXFP6,
//! MXFP8, and a `mixed-precision` folder), for
//! `scripts/reference/check_ct_formats.py`, which decodes them with
//! compressed-tensors' own decompressors. Next to each folder,
//! `NAME.expected.safetensors` holds the f32 weights our `QuantizedTensor`s
//! dequantize to.
//!
//! ```text
//! cargo run -p tensorpress-io --example export_ct_formats -- /tmp/tp-ct-formats
//! ```

use std::path::Path;

use ndarray::Array2;
use serde_json::json;
use tensorpress_io::export::{ActivationScheme, CompressedTensorsWriter, FloatDType};
use tensorpress_io::safetensors::SafetensorsWriter;
use tensorpress_quant_core::formats::{FloatFormat, MxFormat};
use tensorpress_quant_core::{QuantSpec, QuantizedTensor, Rtn, WeightQuantizer};
use tensorpress_tensor::SeededRng;

/// `[out, in]` shapes of a few linear layers (in-features multiples of 32).
const SHAPES: [(usize, usize); 4] = [(64, 64), (32, 64), (128, 64), (64, 128)];

fn weight(rng: &mut SeededRng, rows: usize, cols: usize) -> Array2<f32> {
    let mut w: Array2<f32> = rng.array_normal((rows, cols)) * 0.05;
    // A few outliers, so that tensor and block scales differ.
    w[[0, 0]] = 0.9;
    w[[rows - 1, cols - 1]] = -0.4;
    w
}

/// Rounds scales to `dtype` (the codes stay), so that the stored scales are
/// exactly those the expected weights use.
fn round_scales(q: QuantizedTensor, dtype: FloatDType) -> QuantizedTensor {
    let [rows, cols] = q.shape();
    QuantizedTensor::new(
        *q.spec(),
        rows,
        cols,
        q.codes().to_vec(),
        q.scales().mapv(|s| dtype.round(s)),
        q.zeros().clone(),
        None,
    )
    .expect("same layer")
}

fn write(
    out: &Path,
    name: &str,
    specs: &[QuantSpec],
    activations: Option<ActivationScheme>,
    dtype: FloatDType,
    seed: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = SeededRng::new(seed);
    let mut writer = CompressedTensorsWriter::new().float_dtype(dtype);
    if let Some(a) = activations {
        writer = writer.input_activations(a);
    }
    let mut expected = SafetensorsWriter::new();
    for (i, &(rows, cols)) in SHAPES.iter().enumerate() {
        let spec = specs[i % specs.len()];
        let w = weight(&mut rng, rows, cols);
        let mut q = Rtn::new(spec).quantize(w.view(), None)?;
        if matches!(spec.format, tensorpress_quant_core::Format::Int { .. })
            || matches!(spec.format, tensorpress_quant_core::Format::Float(_))
        {
            q = round_scales(q, dtype);
        }
        let module = format!("model.layers.{i}.mlp.proj");
        writer.add_quantized(&module, &q, None)?;
        expected.add_array(format!("{module}.weight"), q.dequantize().into_dyn().view())?;
    }
    let dir = out.join(name);
    writer.write_dir(&dir, &json!({"torch_dtype": dtype.torch_name()}))?;
    expected.write_file(out.join(format!("{name}.expected.safetensors")))?;
    println!("{}", dir.display());
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .ok_or("usage: export_ct_formats OUT_DIR")?;
    let out = Path::new(&out);
    std::fs::create_dir_all(out)?;
    let fp8 = QuantSpec::float(FloatFormat::E4M3);
    let int8 = QuantSpec::int(8);
    let fp8_dyn = Some(ActivationScheme::fp8_per_token());
    let int8_dyn = Some(ActivationScheme::int8_per_token());
    let bf16 = FloatDType::BF16;
    let f32_ = FloatDType::F32;
    write(out, "fp8-channel-dynamic", &[fp8], fp8_dyn, bf16, 1)?;
    write(out, "fp8-tensor-dynamic", &[fp8.tensor()], fp8_dyn, f32_, 2)?;
    write(out, "fp8-channel-weightonly", &[fp8], None, f32_, 3)?;
    write(out, "fp8-g32-weightonly", &[fp8.group(32)], None, f32_, 4)?;
    write(out, "int8-w8a8", &[int8], int8_dyn, bf16, 5)?;
    write(out, "int8-w8a8-f32", &[int8], int8_dyn, f32_, 6)?;
    write(
        out,
        "int4-g32-asym-a8",
        &[QuantSpec::int(4).group(32).asymmetric()],
        int8_dyn,
        f32_,
        7,
    )?;
    write(out, "nvfp4", &[QuantSpec::nvfp4()], None, bf16, 8)?;
    write(out, "mxfp4", &[QuantSpec::mxfp4()], None, bf16, 9)?;
    write(
        out,
        "mxfp6",
        &[QuantSpec::mx(MxFormat::Fp6E2M3)],
        None,
        bf16,
        10,
    )?;
    write(
        out,
        "mxfp8",
        &[QuantSpec::mx(MxFormat::Fp8E4M3)],
        None,
        bf16,
        11,
    )?;
    write(
        out,
        "mixed",
        &[
            QuantSpec::int(4).group(32),
            QuantSpec::nvfp4(),
            fp8,
            QuantSpec::mxfp4(),
        ],
        None,
        f32_,
        12,
    )?;
    Ok(())
}
