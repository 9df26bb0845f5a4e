//! Opens compressed-tensors sparse checkpoints built from arbitrary bytes:
//! a valid safetensors file whose sparse storage tensors (shape, bitmask,
//! row offsets, values) hold fuzzed sizes and contents. The reader either
//! refuses with an error or returns a dense weight of the declared shape
//! whose nonzeros are exactly the stored values, in order.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use tensorpress_io::import::QuantizedCheckpoint;
use tensorpress_io::safetensors::{SafetensorsModel, SafetensorsWriter};
use tensorpress_tensor::DType;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let two_four = data[0] & 1 == 1;
    let rows = i64::from(data[1] % 9) - i64::from(data[0] >> 7);
    let cols = i64::from(data[2] % 41);
    let mask_rows = usize::from(data[3] % 9);
    let mask_cols = usize::from(data[4] % 7);
    let offsets = data[5] & 1 == 1;
    let (mask_len, rest) = (mask_rows * mask_cols, &data[8..]);
    if rest.len() < mask_len {
        return;
    }
    let (mask, values) = rest.split_at(mask_len);
    let prefix = if two_four {
        "m.up_proj".to_string()
    } else {
        "m.up_proj.weight".to_string()
    };
    let mut w = SafetensorsWriter::new();
    let dims: Vec<u8> = [rows, cols].iter().flat_map(|d| d.to_le_bytes()).collect();
    w.add(format!("{prefix}.shape"), DType::I64, &[2], dims).unwrap();
    w.add(format!("{prefix}.bitmask"), DType::U8, &[mask_rows, mask_cols], mask.to_vec())
        .unwrap();
    let n = values.len();
    let value_shape = if two_four && data[6] & 1 == 1 && mask_rows > 0 && n % mask_rows == 0 {
        vec![mask_rows, n / mask_rows]
    } else {
        vec![n]
    };
    w.add(format!("{prefix}.compressed"), DType::U8, &value_shape, values.to_vec())
        .unwrap();
    if offsets && !two_four {
        let o: Vec<u8> = (0..mask_rows as i64)
            .map(|r| r * i64::from(data[7] % 4))
            .flat_map(|x| x.to_le_bytes())
            .collect();
        w.add(format!("{prefix}.row_offsets"), DType::I64, &[mask_rows], o)
            .unwrap();
    }
    let model = SafetensorsModel::from_bytes(w.to_bytes().unwrap()).unwrap();
    let format = if two_four { "sparse-24-bitmask" } else { "sparse-bitmask" };
    let config = json!({"quantization_config": {
        "quant_method": "compressed-tensors",
        "sparsity_config": {"format": format, "targets": ["m.up_proj"]},
    }});
    let Ok(ckpt) = QuantizedCheckpoint::from_parts(model, config, None) else {
        return;
    };
    let dense = ckpt.model().view("m.up_proj.weight").expect("a dense weight");
    use tensorpress_tensor::Tensor;
    assert_eq!(dense.shape(), [rows as usize, cols as usize]);
    let nonzero: Vec<u8> = dense.data().iter().copied().filter(|&b| b != 0).collect();
    let stored: Vec<u8> = values.iter().copied().filter(|&b| b != 0).collect();
    assert_eq!(nonzero, stored);
});
