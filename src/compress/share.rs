//! Layer solves split across the ranks of a data-parallel [`compress_llama_on`]
//! run.
//!
//! Once a block's Hessians are summed, every rank holds what any layer's
//! solve needs. [`assign`] hands the block's layers to ranks (largest
//! estimated cost first, to the least loaded rank; the same answer on every
//! rank), each rank solves its own, and one all-gather of their byte form
//! ([`encode`]) gives every rank every layer's result, which it applies in
//! model order. The byte form carries what a solve decides — codes, scales,
//! zero points, GGML blocks, a pruned weight and its mask, an adapter, the
//! layer's figures — and nothing a receiver can recompute exactly: a
//! quantized layer's dequantized weight is rebuilt from its codes.
//!
//! A rank whose solve fails sends its error instead, so every rank returns
//! [`Error::DataParallel`] naming it rather than waiting in a collective.
//!
//! [`compress_llama_on`]: super::compress_llama_on

use ndarray::Array2;
use tensorpress_lowrank::Adapter;
use tensorpress_quant_core::formats::{FloatFormat, MxFormat, Specials};
use tensorpress_quant_core::ggml::{GgmlTensor, GgmlType};
use tensorpress_quant_core::{Format, Granularity, QuantSpec, QuantizedTensor};
use tensorpress_sparsity::SparsityMask;

use super::{CompressedWeight, LayerReport};
use crate::{Error, Result};

/// What a layer's solve decided.
pub(super) struct Solved {
    /// Codes and scales, or GGML blocks (`None` for a pruned float layer).
    pub(super) compressed: Option<CompressedWeight>,
    /// The weight the model runs with (before any adapter).
    pub(super) deq: Array2<f32>,
    /// Which weights a pruning method keeps.
    pub(super) mask: Option<SparsityMask>,
    /// A low-rank compensation adapter.
    pub(super) adapter: Option<Adapter>,
    /// The layer's figures.
    pub(super) layer: LayerReport,
}

/// For each layer (of `shapes`, `[rows, cols]`), the rank that solves it:
/// layers in decreasing estimated cost (`rows·cols² + cols³`, a Hessian
/// solve's) each go to the rank with the least work so far; ties go to the
/// lower layer index and the lower rank, so every rank computes the same plan.
pub(super) fn assign(shapes: &[[usize; 2]], ranks: usize) -> Vec<usize> {
    let ranks = ranks.max(1);
    let cost = |[r, c]: [usize; 2]| (r as u128 + c as u128) * (c as u128) * (c as u128);
    let mut order: Vec<usize> = (0..shapes.len()).collect();
    order.sort_by(|&a, &b| cost(shapes[b]).cmp(&cost(shapes[a])).then(a.cmp(&b)));
    let mut load = vec![0u128; ranks];
    let mut owner = vec![0; shapes.len()];
    for i in order {
        let rank = (0..ranks).min_by_key(|&r| (load[r], r)).unwrap_or(0);
        load[rank] += cost(shapes[i]);
        owner[i] = rank;
    }
    owner
}

const OK: u8 = 0;
const UNKNOWN: u8 = 255;
const FAILED: u8 = 1;

/// One rank's message for a block: its solved layers, in the order it solved
/// them, or the error that stopped it.
pub(super) fn encode_message(result: &Result<Vec<Solved>>) -> Vec<u8> {
    let mut out = Vec::new();
    match result {
        Ok(solved) => {
            out.push(OK);
            put_len(&mut out, solved.len());
            for s in solved {
                encode(s, &mut out);
            }
        }
        Err(e) => {
            out.push(FAILED);
            out.extend_from_slice(e.to_string().as_bytes());
        }
    }
    out
}

/// Reads the message of rank `rank` (see [`encode_message`]).
///
/// # Errors
/// [`Error::DataParallel`] when that rank failed (with its error) or sent
/// bytes that do not parse.
pub(super) fn decode_message(rank: usize, bytes: &[u8]) -> Result<Vec<Solved>> {
    let mut r = Reader { bytes, pos: 0 };
    match r.u8()? {
        OK => {
            let n = r.len()?;
            let mut out = Vec::with_capacity(n.min(bytes.len()));
            for _ in 0..n {
                out.push(decode(&mut r)?);
            }
            r.end()?;
            Ok(out)
        }
        FAILED => Err(Error::DataParallel {
            reason: format!(
                "rank {rank} failed solving its layers: {}",
                String::from_utf8_lossy(&bytes[1..])
            ),
        }),
        tag => Err(malformed(format!("message tag {tag}"))),
    }
}

fn malformed(what: String) -> Error {
    Error::DataParallel {
        reason: format!("a rank's layer results do not parse: {what}"),
    }
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u64).to_le_bytes());
}

fn put_f64(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_f32s<'a>(out: &mut Vec<u8>, values: impl IntoIterator<Item = &'a f32>) {
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn put_matrix(out: &mut Vec<u8>, m: &Array2<f32>) {
    put_len(out, m.nrows());
    put_len(out, m.ncols());
    put_f32s(out, m.iter());
}

const NONE: u8 = 0;
const QUANTIZED: u8 = 1;
const GGML: u8 = 2;

/// Appends the byte form of `s`.
fn encode(s: &Solved, out: &mut Vec<u8>) {
    let l = &s.layer;
    put_len(out, l.name.len());
    out.extend_from_slice(l.name.as_bytes());
    put_len(out, l.shape[0]);
    put_len(out, l.shape[1]);
    match l.output_error {
        Some(e) => {
            out.push(1);
            put_f64(out, e);
        }
        None => out.push(0),
    }
    for v in [l.weight_error, l.bits_per_weight, l.sparsity, l.seconds] {
        put_f64(out, v);
    }
    match &s.compressed {
        None => {
            out.push(NONE);
            put_matrix(out, &s.deq);
        }
        Some(CompressedWeight::Quantized(q)) => {
            out.push(QUANTIZED);
            put_spec(out, q.spec());
            let [rows, cols] = q.shape();
            put_len(out, rows);
            put_len(out, cols);
            out.extend_from_slice(q.codes());
            put_matrix(out, q.scales());
            put_matrix(out, q.zeros());
            match q.g_idx() {
                Some(g) => {
                    out.push(1);
                    put_len(out, g.len());
                    for v in g {
                        out.extend_from_slice(&v.to_le_bytes());
                    }
                }
                None => out.push(0),
            }
            match q.global_scale() {
                Some(v) => {
                    out.push(1);
                    put_f32s(out, [v].iter());
                }
                None => out.push(0),
            }
        }
        Some(CompressedWeight::Ggml(g)) => {
            out.push(GGML);
            out.extend_from_slice(&g.ggml_type().id().to_le_bytes());
            let [rows, cols] = g.shape();
            put_len(out, rows);
            put_len(out, cols);
            put_len(out, g.bytes().len());
            out.extend_from_slice(g.bytes());
        }
    }
    match &s.mask {
        Some(m) => {
            out.push(1);
            let (rows, cols) = m.dim();
            put_len(out, rows);
            put_len(out, cols);
            let bits: Vec<bool> = m.as_array().iter().copied().collect();
            for byte in bits.chunks(8) {
                out.push(
                    byte.iter()
                        .enumerate()
                        .fold(0u8, |b, (i, &k)| b | (u8::from(k) << i)),
                );
            }
        }
        None => out.push(0),
    }
    match &s.adapter {
        Some(a) => {
            out.push(1);
            put_matrix(out, &a.a().to_owned());
            put_matrix(out, &a.b().to_owned());
        }
        None => out.push(0),
    }
}

fn put_spec(out: &mut Vec<u8>, spec: &QuantSpec) {
    match spec.format {
        Format::Int { bits } => out.extend_from_slice(&[0, bits]),
        Format::Float(f) => {
            let specials = match f.specials() {
                Specials::Ieee => 0,
                Specials::FiniteNan => 1,
                Specials::AllFinite => 2,
            };
            out.extend_from_slice(&[1, f.exponent_bits(), f.mantissa_bits(), specials]);
        }
        Format::Nf4 => out.push(2),
        Format::Mx(m) => {
            let i = MxFormat::ALL.iter().position(|&x| x == m).unwrap_or(0);
            out.extend_from_slice(&[3, i as u8]);
        }
        Format::Nvfp4 => out.push(4),
        // A format added later: the receiver refuses it by name.
        _ => out.push(UNKNOWN),
    }
    match spec.granularity {
        Granularity::Tensor => out.push(0),
        Granularity::Channel => out.push(1),
        Granularity::Group(g) => {
            out.push(2);
            put_len(out, g);
        }
    }
    out.push(u8::from(spec.symmetric));
}

/// A cursor over a message; every read is checked.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                malformed(format!(
                    "{n} bytes wanted at offset {} of {}",
                    self.pos,
                    self.bytes.len()
                ))
            })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn flag(&mut self) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(malformed(format!("flag {v}"))),
        }
    }

    fn len(&mut self) -> Result<usize> {
        let b = self.take(8)?;
        let v = u64::from_le_bytes(b.try_into().expect("8 bytes"));
        // No length can exceed the message itself (every unit is ≥ 1 byte).
        usize::try_from(v)
            .ok()
            .filter(|&n| n <= self.bytes.len())
            .ok_or_else(|| malformed(format!("length {v}")))
    }

    fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn f32s(&mut self, n: usize) -> Result<Vec<f32>> {
        let bytes = self.take(
            n.checked_mul(4)
                .ok_or_else(|| malformed("f32 count".into()))?,
        )?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    fn matrix(&mut self) -> Result<Array2<f32>> {
        let (rows, cols) = (self.len()?, self.len()?);
        let n = rows
            .checked_mul(cols)
            .ok_or_else(|| malformed("matrix size".into()))?;
        let data = self.f32s(n)?;
        Array2::from_shape_vec((rows, cols), data).map_err(|e| malformed(e.to_string()))
    }

    fn end(&self) -> Result<()> {
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(malformed(format!(
                "{} trailing bytes",
                self.bytes.len() - self.pos
            )))
        }
    }
}

fn read_spec(r: &mut Reader<'_>) -> Result<QuantSpec> {
    let format = match r.u8()? {
        0 => Format::Int { bits: r.u8()? },
        1 => {
            let (e, m) = (r.u8()?, r.u8()?);
            let specials = match r.u8()? {
                0 => Specials::Ieee,
                1 => Specials::FiniteNan,
                2 => Specials::AllFinite,
                v => return Err(malformed(format!("float specials {v}"))),
            };
            Format::Float(FloatFormat::new(e, m, specials)?)
        }
        2 => Format::Nf4,
        3 => {
            let i = usize::from(r.u8()?);
            Format::Mx(
                *MxFormat::ALL
                    .get(i)
                    .ok_or_else(|| malformed(format!("MX format {i}")))?,
            )
        }
        4 => Format::Nvfp4,
        UNKNOWN => {
            return Err(malformed(
                "a format this build cannot send between ranks".into(),
            ))
        }
        v => return Err(malformed(format!("format tag {v}"))),
    };
    let granularity = match r.u8()? {
        0 => Granularity::Tensor,
        1 => Granularity::Channel,
        2 => Granularity::Group(r.len()?),
        v => return Err(malformed(format!("granularity tag {v}"))),
    };
    Ok(QuantSpec {
        format,
        granularity,
        symmetric: r.flag()?,
    })
}

/// Reads one solved layer; a quantized layer's weight is dequantized here.
fn decode(r: &mut Reader<'_>) -> Result<Solved> {
    let n = r.len()?;
    let name = String::from_utf8(r.take(n)?.to_vec()).map_err(|e| malformed(e.to_string()))?;
    let shape = [r.len()?, r.len()?];
    let output_error = if r.flag()? { Some(r.f64()?) } else { None };
    let (weight_error, bits_per_weight, sparsity, seconds) =
        (r.f64()?, r.f64()?, r.f64()?, r.f64()?);
    let (compressed, deq) = match r.u8()? {
        NONE => (None, r.matrix()?),
        QUANTIZED => {
            let spec = read_spec(r)?;
            let (rows, cols) = (r.len()?, r.len()?);
            let n = rows
                .checked_mul(cols)
                .ok_or_else(|| malformed("code count".into()))?;
            let codes = r.take(n)?.to_vec();
            let (scales, zeros) = (r.matrix()?, r.matrix()?);
            let g_idx = if r.flag()? {
                let n = r.len()?;
                let b = r.take(n.checked_mul(4).ok_or_else(|| malformed("g_idx".into()))?)?;
                Some(
                    b.chunks_exact(4)
                        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                )
            } else {
                None
            };
            let mut q = QuantizedTensor::new(spec, rows, cols, codes, scales, zeros, g_idx)?;
            if r.flag()? {
                q = q.with_global_scale(r.f32s(1)?[0])?;
            }
            let deq = q.dequantize();
            (Some(CompressedWeight::Quantized(q)), deq)
        }
        GGML => {
            let id = u32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes"));
            let ty = GgmlType::from_id(id).ok_or_else(|| malformed(format!("GGML type {id}")))?;
            let (rows, cols, n) = (r.len()?, r.len()?, r.len()?);
            let g = GgmlTensor::new(ty, rows, cols, r.take(n)?.to_vec())?;
            let deq = g.dequantize()?;
            (Some(CompressedWeight::Ggml(g)), deq)
        }
        v => return Err(malformed(format!("weight tag {v}"))),
    };
    let mask = if r.flag()? {
        let (rows, cols) = (r.len()?, r.len()?);
        let n = rows
            .checked_mul(cols)
            .ok_or_else(|| malformed("mask size".into()))?;
        let packed = r.take(n.div_ceil(8))?;
        let keep: Vec<bool> = (0..n).map(|i| packed[i / 8] >> (i % 8) & 1 == 1).collect();
        Some(SparsityMask::new(
            Array2::from_shape_vec((rows, cols), keep).map_err(|e| malformed(e.to_string()))?,
        ))
    } else {
        None
    };
    let adapter = if r.flag()? {
        let (a, b) = (r.matrix()?, r.matrix()?);
        Some(Adapter::new(a, b).map_err(|source| Error::Compensation {
            layer: name.clone(),
            source,
        })?)
    } else {
        None
    };
    Ok(Solved {
        compressed,
        deq,
        mask,
        adapter,
        layer: LayerReport {
            name,
            shape,
            output_error,
            weight_error,
            bits_per_weight,
            sparsity,
            seconds,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensorpress_quant_core::ggml::{GgmlQuantizer, GgmlRtn};
    use tensorpress_quant_core::{Rtn, WeightQuantizer};

    fn weight(rows: usize, cols: usize) -> Array2<f32> {
        Array2::from_shape_fn((rows, cols), |(r, c)| {
            ((r * 7 + c * 13) % 23) as f32 / 11.0 - 1.0
        })
    }

    fn report(name: &str, shape: [usize; 2]) -> LayerReport {
        LayerReport {
            name: name.into(),
            shape,
            output_error: Some(0.125),
            weight_error: 0.01,
            bits_per_weight: 4.5,
            sparsity: 0.25,
            seconds: 1.5,
        }
    }

    fn round_trip(s: Solved) -> Solved {
        let bytes = encode_message(&Ok(vec![s]));
        let mut back = decode_message(0, &bytes).unwrap();
        assert_eq!(back.len(), 1);
        // Every strict prefix is refused with a typed error.
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            assert!(matches!(
                decode_message(0, &bytes[..cut]),
                Err(Error::DataParallel { .. })
            ));
        }
        back.remove(0)
    }

    #[test]
    fn every_kind_of_layer_result_round_trips() {
        let w = weight(8, 64);
        let specs = [
            QuantSpec::int(3).group(32).asymmetric(),
            QuantSpec::new(Format::Float(FloatFormat::E4M3)),
            QuantSpec::new(Format::Float(
                FloatFormat::new(3, 0, Specials::AllFinite).unwrap(),
            )),
            QuantSpec::new(Format::Nf4).group(32),
            QuantSpec::new(Format::Mx(MxFormat::Fp6E3M2)),
            QuantSpec::new(Format::Nvfp4),
        ];
        for spec in specs {
            let q = Rtn::new(spec).quantize(w.view(), None).unwrap();
            let deq = q.dequantize();
            let mask = SparsityMask::from_nonzeros(deq.view());
            let adapter = Adapter::new(weight(8, 2), weight(2, 64)).unwrap();
            let back = round_trip(Solved {
                compressed: Some(CompressedWeight::Quantized(q.clone())),
                deq: deq.clone(),
                mask: Some(mask.clone()),
                adapter: Some(adapter.clone()),
                layer: report("model.layers.0.mlp.up_proj", [8, 64]),
            });
            assert_eq!(back.compressed.unwrap().as_quantized(), Some(&q), "{spec}");
            assert_eq!(back.deq, deq);
            assert_eq!(back.mask.unwrap(), mask);
            assert_eq!(back.adapter.unwrap().a(), adapter.a());
            assert_eq!(back.layer.output_error, Some(0.125));
            assert_eq!(back.layer.seconds, 1.5);
        }
        let g = GgmlRtn::new(GgmlType::Q4K)
            .quantize(weight(2, 256).view(), None)
            .unwrap();
        let back = round_trip(Solved {
            compressed: Some(CompressedWeight::Ggml(g.clone())),
            deq: g.dequantize().unwrap(),
            mask: None,
            adapter: None,
            layer: report("lm_head", [2, 256]),
        });
        match back.compressed {
            Some(CompressedWeight::Ggml(b)) => assert_eq!(b.bytes(), g.bytes()),
            _ => panic!("not GGML"),
        }
        // A pruned float layer ships its weight.
        let back = round_trip(Solved {
            compressed: None,
            deq: w.clone(),
            mask: Some(SparsityMask::from_nonzeros(w.view())),
            adapter: None,
            layer: report("x", [8, 64]),
        });
        assert_eq!(back.deq, w);
    }

    #[test]
    fn a_failed_rank_is_named_and_garbage_is_refused() {
        let failed: Result<Vec<Solved>> = Err(Error::NoCalibration);
        let err = decode_message(3, &encode_message(&failed)).err().unwrap();
        assert!(err.to_string().contains("rank 3 failed"), "{err}");
        for junk in [&[][..], &[7], &[0, 255, 255, 255, 255, 255, 255, 255, 255]] {
            assert!(matches!(
                decode_message(0, junk),
                Err(Error::DataParallel { .. })
            ));
        }
    }

    #[test]
    fn plans_balance_the_estimated_cost_and_agree() {
        // SmolLM2's block: q, k, v, o, gate, up, down.
        let shapes = [
            [576, 576],
            [192, 576],
            [192, 576],
            [576, 576],
            [1536, 576],
            [1536, 576],
            [576, 1536],
        ];
        let plan = assign(&shapes, 2);
        assert_eq!(plan, assign(&shapes, 2));
        // down_proj (the dearest) alone on one rank, everything else on the other.
        assert_eq!(plan[6], 0);
        assert!(plan[..6].iter().all(|&r| r == 1), "{plan:?}");
        assert_eq!(assign(&shapes, 1), vec![0; 7]);
        let three = assign(&shapes, 3);
        assert!((0..3).all(|r| three.contains(&r)), "{three:?}");
    }
}
