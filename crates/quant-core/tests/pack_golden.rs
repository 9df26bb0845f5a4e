//! The packing layouts against words made by the reference code
//! (`scripts/reference/pack_golden.py`): compressed-tensors' own
//! `pack_to_int32`, AutoGPTQ's packing loop and AutoAWQ's order map.

use ndarray::Array2;
use serde_json::Value;
use tensorpress_quant_core::pack::compressed_tensors::{self as ct, CtPacking};
use tensorpress_quant_core::pack::{awq, gptq};

fn golden() -> Vec<Value> {
    let text = include_str!("data/pack_golden.json");
    let v: Value = serde_json::from_str(text).unwrap();
    v["cases"].as_array().unwrap().clone()
}

fn matrix<T: TryFrom<i64>>(v: &Value) -> Array2<T>
where
    T::Error: std::fmt::Debug,
{
    let rows = v.as_array().unwrap();
    let cols = rows.first().map_or(0, |r| r.as_array().unwrap().len());
    let flat: Vec<T> = rows
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter())
        .map(|x| T::try_from(x.as_i64().unwrap()).unwrap())
        .collect();
    Array2::from_shape_vec((rows.len(), cols), flat).unwrap()
}

#[test]
fn compressed_tensors_matches_pack_to_int32() {
    let mut seen = 0;
    for case in golden()
        .iter()
        .filter(|c| c["layout"] == "compressed-tensors")
    {
        let bits = case["bits"].as_u64().unwrap() as u8;
        let codes: Array2<u8> = matrix(&case["codes"]);
        let dim1: Array2<i32> = matrix(&case["packed_dim1"]);
        let dim0: Array2<i32> = matrix(&case["packed_dim0"]);
        let (rows, cols) = codes.dim();
        assert_eq!(
            ct::pack_weight(codes.view(), bits, CtPacking::Dense).unwrap(),
            dim1,
            "bits {bits}, {rows}x{cols}"
        );
        assert_eq!(
            ct::pack_zero_points(codes.view(), bits, CtPacking::Dense).unwrap(),
            dim0,
            "bits {bits}, {rows}x{cols}, packed along dim 0"
        );
        assert_eq!(
            ct::unpack_weight(dim1.view(), bits, cols, CtPacking::Dense).unwrap(),
            codes
        );
        assert_eq!(
            ct::unpack_zero_points(dim0.view(), bits, rows, CtPacking::Dense).unwrap(),
            codes
        );
        seen += 1;
    }
    assert_eq!(seen, 24);
}

#[test]
fn gptq_matches_autogptq() {
    let mut seen = 0;
    for case in golden().iter().filter(|c| c["layout"] == "gptq") {
        let bits = case["bits"].as_u64().unwrap() as u8;
        let codes: Array2<u8> = matrix(&case["codes"]);
        let qweight: Array2<i32> = matrix(&case["qweight"]);
        let qzeros: Array2<i32> = matrix(&case["qzeros_of_codes_as_zeros_v2"]);
        assert_eq!(
            gptq::pack_qweight(codes.view(), bits).unwrap(),
            qweight,
            "bits {bits}"
        );
        assert_eq!(
            gptq::unpack_qweight(qweight.view(), bits, codes.ncols()).unwrap(),
            codes
        );
        assert_eq!(
            gptq::pack_qzeros(codes.view(), bits, gptq::ZeroFormat::V2).unwrap(),
            qzeros,
            "bits {bits}"
        );
        seen += 1;
    }
    assert_eq!(seen, 4);
}

#[test]
fn awq_matches_autoawq() {
    let case = golden().into_iter().find(|c| c["layout"] == "awq").unwrap();
    let codes: Array2<u8> = matrix(&case["codes"]);
    let qweight: Array2<i32> = matrix(&case["qweight"]);
    assert_eq!(awq::pack_qweight(codes.view(), 4).unwrap(), qweight);
    assert_eq!(awq::unpack_qweight(qweight.view(), 4).unwrap(), codes);
}
