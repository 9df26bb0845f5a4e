//! NF4, the 4-bit NormalFloat of QLoRA (Dettmers, Pagnoni, Holtzman,
//! Zettlemoyer, "QLoRA: Efficient Finetuning of Quantized LLMs", NeurIPS 2023).
//!
//! Sixteen values in `[−1, 1]` placed at quantiles of a standard normal (with
//! an exact zero), scaled per block by the block's absolute maximum
//! ("absmax", 64 weights per block by default). The table and the encoder's
//! decision thresholds are bitsandbytes' (`csrc/kernels.cu`, `dQuantizeNF4`):
//! a value goes to the code above threshold `t_i` when `x > t_i`, the
//! thresholds being the midpoints of adjacent table values, so encoding is
//! nearest-value with ties to the lower value. As in bitsandbytes the value is
//! normalised by multiplying with `1 / absmax`.

/// bitsandbytes' NF4 table: the value of each code, ascending.
#[allow(clippy::excessive_precision)] // the reference's digits, kept for comparison
pub const NF4_VALUES: [f32; 16] = [
    -1.0,
    -0.696_192_800_998_687_7,
    -0.525_073_051_452_636_7,
    -0.394_917_488_098_144_53,
    -0.284_441_381_692_886_35,
    -0.184_773_430_228_233_34,
    -0.091_050_036_251_544_95,
    0.0,
    0.079_580_299_556_255_34,
    0.160_930_201_411_247_25,
    0.246_112_301_945_686_34,
    0.337_915_241_718_292_24,
    0.440_709_829_330_444_34,
    0.562_617_003_917_694_1,
    0.722_956_836_223_602_3,
    1.0,
];

/// bitsandbytes' decision thresholds: code `c` is chosen when
/// `THRESHOLDS[c − 1] < x ≤ THRESHOLDS[c]`.
#[allow(clippy::excessive_precision)] // the reference's digits, kept for comparison
const THRESHOLDS: [f32; 15] = [
    -0.848_096_400_499_343_9,
    -0.610_632_926_225_662_2,
    -0.459_995_269_775_390_6,
    -0.339_679_434_895_515_44,
    -0.234_607_405_960_559_84,
    -0.137_911_733_239_889_14,
    -0.045_525_018_125_772_476,
    0.039_790_149_778_127_67,
    0.120_255_250_483_751_3,
    0.203_521_251_678_466_8,
    0.292_013_771_831_989_3,
    0.389_312_535_524_368_3,
    0.501_663_416_624_069_2,
    0.642_786_920_070_648_2,
    0.861_478_418_111_801_1,
];

/// The code of the exact zero.
pub const NF4_ZERO: u8 = 7;

/// The code of a normalised value `x` (nominally in `[−1, 1]`; values outside
/// go to the end codes, NaN to code 0 as in bitsandbytes).
#[inline]
pub fn nf4_encode(x: f32) -> u8 {
    THRESHOLDS.iter().filter(|&&t| x > t).count() as u8
}

/// The normalised value of `code` (its low four bits).
#[inline]
pub fn nf4_decode(code: u8) -> f32 {
    NF4_VALUES[usize::from(code & 0xf)]
}

/// The spacing of the NF4 table around the normalised value `x`: the gap
/// between the two table values that bracket it (the end gap outside
/// `[−1, 1]`). Nearest-value encoding is within half of it.
pub fn nf4_step_at(x: f32) -> f32 {
    let i = NF4_VALUES
        .iter()
        .position(|&v| v >= x)
        .unwrap_or(NF4_VALUES.len() - 1)
        .max(1);
    NF4_VALUES[i] - NF4_VALUES[i - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_midpoints_and_the_encoder_is_nearest() {
        for i in 0..15 {
            let mid = (f64::from(NF4_VALUES[i]) + f64::from(NF4_VALUES[i + 1])) / 2.0;
            assert!((f64::from(THRESHOLDS[i]) - mid).abs() < 1e-7, "{i}");
        }
        for code in 0..16u8 {
            assert_eq!(nf4_encode(nf4_decode(code)), code);
        }
        for k in -1100..=1100 {
            let x = k as f32 / 1000.0;
            let c = nf4_encode(x);
            let best = NF4_VALUES
                .iter()
                .map(|v| (v - x).abs())
                .fold(f32::INFINITY, f32::min);
            assert!((nf4_decode(c) - x).abs() <= best + 1e-7, "{x}");
            assert!((nf4_decode(c) - x).abs() <= nf4_step_at(x) / 2.0 + 1e-6 || x.abs() > 1.0);
        }
        assert_eq!(nf4_encode(f32::NAN), 0);
        assert_eq!(nf4_encode(0.0), NF4_ZERO);
        assert_eq!(
            nf4_encode(THRESHOLDS[6]),
            6,
            "on a threshold: the lower code"
        );
    }
}
