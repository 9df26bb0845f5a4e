//! The messages compressors exchange, the collective each needs, and their
//! byte format (see [`Payload`]).

use ndarray::{ArrayD, IxDyn};

use crate::{bitpack, varint, Error, Result};

/// Largest rank of a payload's shape.
pub const MAX_NDIM: usize = 4;

/// Largest element count of a payload: flat indices are `u32`.
pub const MAX_ELEMENTS: usize = u32::MAX as usize;

/// The collective operation a distributed engine should use for a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Collective {
    /// Element-wise sum over workers (`MPI_Allreduce` with `MPI_SUM`): the
    /// payloads of all workers have the same layout, and their sum is
    /// meaningful (dense gradients, PowerSGD's factors).
    AllReduce,
    /// Every worker receives every worker's payload (`MPI_Allgatherv`) and
    /// decodes each: layouts differ between workers (sparse indices) or sums of
    /// codes mean nothing (quantized levels, signs).
    AllGather,
}

/// One worker's message for one tensor in one round of an exchange.
///
/// The fields are public for engines that move them directly; the invariants
/// (listed per variant) are checked by [`Payload::validate`], which
/// [`to_bytes`](Payload::to_bytes), [`from_bytes`](Payload::from_bytes) and
/// [`to_dense`](Payload::to_dense) call.
///
/// # Byte format
///
/// Little-endian throughout. One tag byte, then per kind:
///
/// | tag | kind        | fields                                                                 |
/// |-----|-------------|------------------------------------------------------------------------|
/// | 0   | `Dense`     | shape, `f32 × numel`                                                   |
/// | 1   | `Factor`    | `rows: u32`, `cols: u32`, `f32 × rows·cols`                            |
/// | 2   | `Sparse`    | shape, `nnz: u32`, `nnz` zigzag varints of index deltas, `f32 × nnz`   |
/// | 3   | `Quantized` | shape, `levels: u8`, `bucket: u32`, `f32` per bucket, packed codes     |
/// | 4   | `Sign`      | shape, `scale: f32`, packed sign bits                                  |
///
/// A shape is `ndim: u8` (`1..=`[`MAX_NDIM`]) then `ndim` dimensions as `u32`.
/// Sparse indices are flat row-major positions, each stored as the zigzag
/// LEB128 varint of its difference to the previous one (the first from 0), so
/// sorted indices of a gradient at 99.9 % sparsity take about two bytes each.
/// Quantized codes `c ∈ [-levels, levels]` are stored as `c + levels` in
/// [`bits_for_levels`] bits with [`bitpack::pack`] (32-bit words, codes never
/// straddle words); sign bits (1 = negative) likewise at one bit.
///
/// [`Payload::from_bytes`] takes untrusted bytes: it never panics, checks every
/// size with checked arithmetic against the bytes present before allocating (so
/// it allocates at most a small multiple of the input length), and rejects
/// inconsistent fields with a typed [`Error`].
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// Uncompressed values, row-major. `values.len() == shape.iter().product()`.
    Dense {
        /// Shape of the tensor (`1..=MAX_NDIM` dimensions).
        shape: Vec<usize>,
        /// The values.
        values: Vec<f32>,
    },
    /// A dense `rows × cols` factor matrix of a low-rank exchange (PowerSGD's
    /// `P` or `Q`), row-major; only meaningful to the compressor that sent it.
    Factor {
        /// Rows.
        rows: usize,
        /// Columns (the rank).
        cols: usize,
        /// `rows · cols` values.
        values: Vec<f32>,
    },
    /// Selected entries: `indices` are flat row-major positions `< numel`
    /// (any order; duplicates add up), `values.len() == indices.len()`.
    Sparse {
        /// Shape of the tensor.
        shape: Vec<usize>,
        /// Flat positions.
        indices: Vec<u32>,
        /// Values at those positions.
        values: Vec<f32>,
    },
    /// Stochastically rounded levels (QSGD, TernGrad): element `i` decodes to
    /// `scales[i / bucket] · codes[i] / levels`.
    /// `levels ∈ 1..=127`, `bucket ≥ 1`, `|codes[i]| ≤ levels`,
    /// `codes.len() == numel`, `scales.len() == ceil(numel / bucket)`.
    Quantized {
        /// Shape of the tensor.
        shape: Vec<usize>,
        /// Number of positive levels `s`.
        levels: u8,
        /// Elements per scale.
        bucket: usize,
        /// One scale per bucket.
        scales: Vec<f32>,
        /// Signed level of each element.
        codes: Vec<i8>,
    },
    /// Scaled signs: element `i` decodes to `-scale` if `negative[i]`, else
    /// `scale`. `negative.len() == numel`.
    Sign {
        /// Shape of the tensor.
        shape: Vec<usize>,
        /// Magnitude of every element.
        scale: f32,
        /// Sign of each element.
        negative: Vec<bool>,
    },
}

const TAG_DENSE: u8 = 0;
const TAG_FACTOR: u8 = 1;
const TAG_SPARSE: u8 = 2;
const TAG_QUANTIZED: u8 = 3;
const TAG_SIGN: u8 = 4;

/// Bits per quantized code for `levels` positive levels: the smallest `b`
/// with `2·levels + 1 ≤ 2^b`.
///
/// # Errors
/// [`Error::InvalidConfig`] unless `levels ∈ 1..=127`.
pub fn bits_for_levels(levels: u8) -> Result<u8> {
    if !(1..=127).contains(&levels) {
        return Err(Error::InvalidConfig {
            param: "levels",
            value: levels.to_string(),
            expected: "in 1..=127",
        });
    }
    let symbols = 2 * u32::from(levels) + 1;
    Ok((32 - (symbols - 1).leading_zeros()) as u8)
}

/// Element count of `shape`, checked against [`MAX_NDIM`] and [`MAX_ELEMENTS`].
fn numel(shape: &[usize]) -> Result<usize> {
    if shape.is_empty() || shape.len() > MAX_NDIM {
        return Err(Error::Malformed {
            what: "shape rank outside 1..=4",
        });
    }
    // The product of the non-zero dimensions is bounded too: ndarray refuses
    // shapes whose non-zero axes overflow `isize` even when one axis is 0.
    let (mut n, mut nonzero): (u128, u128) = (1, 1);
    for &d in shape {
        n = n.saturating_mul(d as u128);
        nonzero = nonzero.saturating_mul(d.max(1) as u128);
    }
    if nonzero > MAX_ELEMENTS as u128 {
        return Err(Error::TooLarge {
            what: "element count of the non-zero dimensions",
            requested: nonzero,
            limit: MAX_ELEMENTS as u128,
        });
    }
    if n > MAX_ELEMENTS as u128 {
        return Err(Error::TooLarge {
            what: "element count",
            requested: n,
            limit: MAX_ELEMENTS as u128,
        });
    }
    Ok(n as usize)
}

fn check_len(what: &'static str, got: usize, expected: usize) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(Error::Malformed { what })
    }
}

fn shape_bytes(shape: &[usize]) -> usize {
    1 + 4 * shape.len()
}

fn varint_len(v: u64) -> usize {
    // 7 payload bits per byte, at least one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

impl Payload {
    /// The collective this payload travels by: [`Collective::AllReduce`] for
    /// `Dense` and `Factor`, [`Collective::AllGather`] for the others.
    pub fn collective(&self) -> Collective {
        match self {
            Payload::Dense { .. } | Payload::Factor { .. } => Collective::AllReduce,
            Payload::Sparse { .. } | Payload::Quantized { .. } | Payload::Sign { .. } => {
                Collective::AllGather
            }
        }
    }

    /// The variant's name (`"dense"`, `"factor"`, `"sparse"`, `"quantized"`,
    /// `"sign"`), for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Payload::Dense { .. } => "dense",
            Payload::Factor { .. } => "factor",
            Payload::Sparse { .. } => "sparse",
            Payload::Quantized { .. } => "quantized",
            Payload::Sign { .. } => "sign",
        }
    }

    /// The shape of the tensor it encodes (`[rows, cols]` for a factor).
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Payload::Factor { rows, cols, .. } => vec![*rows, *cols],
            Payload::Dense { shape, .. }
            | Payload::Sparse { shape, .. }
            | Payload::Quantized { shape, .. }
            | Payload::Sign { shape, .. } => shape.clone(),
        }
    }

    /// Checks the invariants listed on each variant.
    ///
    /// # Errors
    /// [`Error::Malformed`], [`Error::TooLarge`], [`Error::InvalidConfig`]
    /// (quantization levels).
    pub fn validate(&self) -> Result<()> {
        match self {
            Payload::Dense { shape, values } => check_len(
                "dense value count differs from the shape",
                values.len(),
                numel(shape)?,
            ),
            Payload::Factor { rows, cols, values } => {
                let n = numel(&[*rows, *cols])?;
                check_len(
                    "factor value count differs from rows × cols",
                    values.len(),
                    n,
                )
            }
            Payload::Sparse {
                shape,
                indices,
                values,
            } => {
                let n = numel(shape)?;
                check_len(
                    "sparse index and value counts differ",
                    values.len(),
                    indices.len(),
                )?;
                if indices.iter().any(|&i| i as usize >= n) {
                    return Err(Error::Malformed {
                        what: "sparse index outside the tensor",
                    });
                }
                Ok(())
            }
            Payload::Quantized {
                shape,
                levels,
                bucket,
                scales,
                codes,
            } => {
                let n = numel(shape)?;
                bits_for_levels(*levels)?;
                if *bucket == 0 || *bucket > MAX_ELEMENTS {
                    return Err(Error::Malformed {
                        what: "bucket size outside 1..=u32::MAX",
                    });
                }
                check_len("code count differs from the shape", codes.len(), n)?;
                check_len(
                    "scale count differs from the buckets",
                    scales.len(),
                    n.div_ceil(*bucket),
                )?;
                let l = *levels as i8;
                if codes.iter().any(|&c| c < -l || c > l) {
                    return Err(Error::Malformed {
                        what: "quantized code outside [-levels, levels]",
                    });
                }
                Ok(())
            }
            Payload::Sign {
                shape, negative, ..
            } => check_len(
                "sign count differs from the shape",
                negative.len(),
                numel(shape)?,
            ),
        }
    }

    /// The exact length of [`to_bytes`](Payload::to_bytes)'s output for a
    /// valid payload (what a worker puts on the wire).
    pub fn byte_len(&self) -> usize {
        1 + match self {
            Payload::Dense { shape, values } => shape_bytes(shape) + 4 * values.len(),
            Payload::Factor { values, .. } => 8 + 4 * values.len(),
            Payload::Sparse {
                shape,
                indices,
                values,
            } => {
                let mut prev = 0i64;
                let idx: usize = indices
                    .iter()
                    .map(|&i| {
                        let d = i64::from(i) - prev;
                        prev = i64::from(i);
                        varint_len(varint::zigzag_encode(d))
                    })
                    .sum();
                shape_bytes(shape) + 4 + idx + 4 * values.len()
            }
            Payload::Quantized {
                shape,
                levels,
                scales,
                codes,
                ..
            } => {
                let words = bits_for_levels(*levels)
                    .and_then(|b| bitpack::packed_len(codes.len(), b))
                    .unwrap_or(0);
                shape_bytes(shape) + 1 + 4 + 4 * scales.len() + 4 * words
            }
            Payload::Sign {
                shape, negative, ..
            } => shape_bytes(shape) + 4 + 4 * negative.len().div_ceil(32),
        }
    }

    /// Serializes the payload in the format above ([`Payload`]).
    ///
    /// # Errors
    /// As [`validate`](Payload::validate).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let mut out = Vec::with_capacity(self.byte_len());
        let put_shape = |out: &mut Vec<u8>, shape: &[usize]| {
            out.push(shape.len() as u8);
            for &d in shape {
                out.extend_from_slice(&(d as u32).to_le_bytes());
            }
        };
        let put_f32s = |out: &mut Vec<u8>, v: &[f32]| {
            for x in v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
        let put_words = |out: &mut Vec<u8>, w: &[u32]| {
            for x in w {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
        match self {
            Payload::Dense { shape, values } => {
                out.push(TAG_DENSE);
                put_shape(&mut out, shape);
                put_f32s(&mut out, values);
            }
            Payload::Factor { rows, cols, values } => {
                out.push(TAG_FACTOR);
                out.extend_from_slice(&(*rows as u32).to_le_bytes());
                out.extend_from_slice(&(*cols as u32).to_le_bytes());
                put_f32s(&mut out, values);
            }
            Payload::Sparse {
                shape,
                indices,
                values,
            } => {
                out.push(TAG_SPARSE);
                put_shape(&mut out, shape);
                out.extend_from_slice(&(indices.len() as u32).to_le_bytes());
                let mut prev = 0i64;
                for &i in indices {
                    varint::write_ivarint(i64::from(i) - prev, &mut out);
                    prev = i64::from(i);
                }
                put_f32s(&mut out, values);
            }
            Payload::Quantized {
                shape,
                levels,
                bucket,
                scales,
                codes,
            } => {
                out.push(TAG_QUANTIZED);
                put_shape(&mut out, shape);
                out.push(*levels);
                out.extend_from_slice(&(*bucket as u32).to_le_bytes());
                put_f32s(&mut out, scales);
                let offset: Vec<u8> = codes.iter().map(|&c| (c + *levels as i8) as u8).collect();
                put_words(
                    &mut out,
                    &bitpack::pack(&offset, bits_for_levels(*levels)?)?,
                );
            }
            Payload::Sign {
                shape,
                scale,
                negative,
            } => {
                out.push(TAG_SIGN);
                put_shape(&mut out, shape);
                out.extend_from_slice(&scale.to_le_bytes());
                let bits: Vec<u8> = negative.iter().map(|&b| u8::from(b)).collect();
                put_words(&mut out, &bitpack::pack(&bits, 1)?);
            }
        }
        debug_assert_eq!(out.len(), self.byte_len());
        Ok(out)
    }

    /// Parses a payload written by [`to_bytes`](Payload::to_bytes); the whole
    /// input must be one payload.
    ///
    /// # Errors
    /// [`Error::Truncated`], [`Error::UnknownTag`], [`Error::Malformed`],
    /// [`Error::TooLarge`], [`Error::TrailingBytes`], the varint errors, and
    /// those of [`validate`](Payload::validate).
    pub fn from_bytes(bytes: &[u8]) -> Result<Payload> {
        let mut r = Reader { bytes, pos: 0 };
        let tag = r.u8()?;
        let payload = match tag {
            TAG_DENSE => {
                let shape = r.shape()?;
                let values = r.f32s(numel(&shape)?)?;
                Payload::Dense { shape, values }
            }
            TAG_FACTOR => {
                let rows = r.u32()? as usize;
                let cols = r.u32()? as usize;
                let values = r.f32s(numel(&[rows, cols])?)?;
                Payload::Factor { rows, cols, values }
            }
            TAG_SPARSE => {
                let shape = r.shape()?;
                numel(&shape)?;
                let nnz = r.u32()? as usize;
                // Each entry needs at least one index byte and four value bytes.
                r.ensure(nnz.checked_mul(5).ok_or(Error::Malformed {
                    what: "sparse entry count overflows",
                })?)?;
                let mut indices = Vec::with_capacity(nnz);
                let mut prev = 0i64;
                for _ in 0..nnz {
                    let (d, used) = varint::read_ivarint(&r.bytes[r.pos..])?;
                    r.pos += used;
                    let i = prev.checked_add(d).ok_or(Error::Malformed {
                        what: "sparse index overflows",
                    })?;
                    let i = u32::try_from(i).map_err(|_| Error::Malformed {
                        what: "sparse index outside u32",
                    })?;
                    indices.push(i);
                    prev = i64::from(i);
                }
                let values = r.f32s(nnz)?;
                Payload::Sparse {
                    shape,
                    indices,
                    values,
                }
            }
            TAG_QUANTIZED => {
                let shape = r.shape()?;
                let n = numel(&shape)?;
                let levels = r.u8()?;
                let bits = bits_for_levels(levels)?;
                let bucket = r.u32()? as usize;
                if bucket == 0 {
                    return Err(Error::Malformed {
                        what: "bucket size outside 1..=u32::MAX",
                    });
                }
                let scales = r.f32s(n.div_ceil(bucket))?;
                let words = r.u32s(bitpack::packed_len(n, bits)?)?;
                let offset = bitpack::unpack(&words, bits, n)?;
                let l = i16::from(levels);
                let codes = offset
                    .iter()
                    .map(|&c| {
                        let v = i16::from(c) - l;
                        if v > l {
                            Err(Error::Malformed {
                                what: "quantized code outside [-levels, levels]",
                            })
                        } else {
                            Ok(v as i8)
                        }
                    })
                    .collect::<Result<Vec<i8>>>()?;
                Payload::Quantized {
                    shape,
                    levels,
                    bucket,
                    scales,
                    codes,
                }
            }
            TAG_SIGN => {
                let shape = r.shape()?;
                let n = numel(&shape)?;
                let scale = r.f32()?;
                let words = r.u32s(n.div_ceil(32))?;
                let negative = bitpack::unpack(&words, 1, n)?
                    .into_iter()
                    .map(|b| b == 1)
                    .collect();
                Payload::Sign {
                    shape,
                    scale,
                    negative,
                }
            }
            tag => return Err(Error::UnknownTag { tag }),
        };
        if r.pos != bytes.len() {
            return Err(Error::TrailingBytes {
                extra: bytes.len() - r.pos,
            });
        }
        payload.validate()?;
        Ok(payload)
    }

    /// Decodes a self-contained payload into a dense tensor of its shape (a
    /// factor decodes to its own `rows × cols` matrix).
    ///
    /// Allocates the full tensor: up to [`MAX_ELEMENTS`] values for a sparse
    /// payload, whatever its length on the wire.
    ///
    /// # Errors
    /// As [`validate`](Payload::validate).
    pub fn to_dense(&self) -> Result<ArrayD<f32>> {
        self.validate()?;
        let shape = IxDyn(&self.shape());
        let malformed = |_| Error::Malformed {
            what: "shape and value count differ",
        };
        match self {
            Payload::Dense { values, .. } | Payload::Factor { values, .. } => {
                ArrayD::from_shape_vec(shape, values.clone()).map_err(malformed)
            }
            Payload::Sparse {
                indices, values, ..
            } => {
                let mut out = ArrayD::zeros(shape);
                let flat = out.as_slice_mut().ok_or(Error::Malformed {
                    what: "non-contiguous output",
                })?;
                for (&i, &v) in indices.iter().zip(values) {
                    flat[i as usize] += v;
                }
                Ok(out)
            }
            Payload::Quantized {
                levels,
                bucket,
                scales,
                codes,
                ..
            } => {
                let inv = 1.0 / f32::from(*levels);
                let values = codes
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| scales[i / bucket] * f32::from(c) * inv)
                    .collect();
                ArrayD::from_shape_vec(shape, values).map_err(malformed)
            }
            Payload::Sign {
                scale, negative, ..
            } => {
                let values = negative
                    .iter()
                    .map(|&neg| if neg { -scale } else { *scale })
                    .collect();
                ArrayD::from_shape_vec(shape, values).map_err(malformed)
            }
        }
    }

    /// The values an all-reduce sums: those of a `Dense` or `Factor` payload,
    /// `None` for the all-gathered kinds.
    pub fn reduce_values(&self) -> Option<&[f32]> {
        match self {
            Payload::Dense { values, .. } | Payload::Factor { values, .. } => Some(values),
            _ => None,
        }
    }

    /// Mutable access to [`reduce_values`](Payload::reduce_values), for an
    /// engine that sums them in place (`MPI_Allreduce`).
    pub fn reduce_values_mut(&mut self) -> Option<&mut [f32]> {
        match self {
            Payload::Dense { values, .. } | Payload::Factor { values, .. } => Some(values),
            _ => None,
        }
    }

    /// Adds `other` element-wise into `self`: the reduction of
    /// [`Collective::AllReduce`], for engines that sum in process (a simulated
    /// one, or a tree of partial sums).
    ///
    /// # Errors
    /// [`Error::PayloadKind`] unless both are `Dense` or both `Factor`;
    /// [`Error::ShapeMismatch`] when their shapes differ.
    pub fn add_assign(&mut self, other: &Payload) -> Result<()> {
        let other_shape = other.shape();
        match (self, other) {
            (Payload::Dense { shape, values }, Payload::Dense { values: o, .. })
                if *shape == other_shape && values.len() == o.len() =>
            {
                values.iter_mut().zip(o).for_each(|(a, b)| *a += b);
                Ok(())
            }
            (
                Payload::Factor {
                    rows, cols, values, ..
                },
                Payload::Factor { values: o, .. },
            ) if [*rows, *cols] == other_shape[..] && values.len() == o.len() => {
                values.iter_mut().zip(o).for_each(|(a, b)| *a += b);
                Ok(())
            }
            (s @ (Payload::Dense { .. } | Payload::Factor { .. }), o) if s.kind() == o.kind() => {
                Err(Error::ShapeMismatch {
                    op: "Payload::add_assign",
                    lhs: s.shape(),
                    rhs: other_shape,
                })
            }
            (s, o) => Err(Error::PayloadKind {
                op: "Payload::add_assign",
                expected: if matches!(s, Payload::Factor { .. }) {
                    "factor"
                } else {
                    "dense"
                },
                got: if s.collective() == Collective::AllReduce {
                    o.kind()
                } else {
                    s.kind()
                },
            }),
        }
    }
}

/// A cursor over untrusted bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn ensure(&self, n: usize) -> Result<()> {
        let available = self.bytes.len() - self.pos;
        if n > available {
            Err(Error::Truncated {
                unit: "bytes",
                needed: n,
                available,
            })
        } else {
            Ok(())
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
        self.ensure(n)?;
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_bits(self.u32()?))
    }

    fn byte_count(n: usize) -> Result<usize> {
        n.checked_mul(4).ok_or(Error::TooLarge {
            what: "byte count",
            requested: n as u128 * 4,
            limit: usize::MAX as u128,
        })
    }

    fn u32s(&mut self, n: usize) -> Result<Vec<u32>> {
        let b = self.take(Self::byte_count(n)?)?;
        Ok(b.chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn f32s(&mut self, n: usize) -> Result<Vec<f32>> {
        Ok(self.u32s(n)?.into_iter().map(f32::from_bits).collect())
    }

    fn shape(&mut self) -> Result<Vec<usize>> {
        let ndim = self.u8()? as usize;
        if ndim == 0 || ndim > MAX_NDIM {
            return Err(Error::Malformed {
                what: "shape rank outside 1..=4",
            });
        }
        (0..ndim).map(|_| Ok(self.u32()? as usize)).collect()
    }
}

#[cfg(test)]
mod tests;
