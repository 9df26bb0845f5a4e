//! The chunked exponent/sign-mantissa codec for f32, f16 and bf16 tensors.
//!
//! # Stream layout
//!
//! ```text
//! u8        format tag (1 = f32, 2 = f16, 3 = bf16)
//! varint    n, the number of elements
//! varint    chunk length in elements (≥ 1; the last chunk may be shorter)
//! varint ×C length in bytes of each chunk's symbol section (C = ⌈n / chunk⌉)
//! then, per chunk, its symbol section followed by its raw section
//! ```
//!
//! A symbol section starts with a mode byte: `0` stores the chunk's symbols as
//! plain bytes (the fallback when coding would not pay), `1` holds a
//! [`Categorical`] model ([`Categorical::write_to`]) and the words of
//! [`Rans<LANES>`](Rans) (8 lanes), little-endian. The raw section holds
//! `raw_width` bytes per element, element after element. Every chunk is
//! independent, so chunks decode in parallel.

use half::{bf16, f16};
use rayon::prelude::*;

use super::fused;
use crate::entropy::rans::Rans;
use crate::entropy::{Categorical, DecodeTable};
use crate::varint::{read_uvarint, write_uvarint};
use crate::{Error, Result};

/// Interleaved rANS states per chunk: enough independent chains to hide the
/// table-lookup latency of the decoder.
pub const LANES: usize = 8;

/// Largest chunk, in elements, a stream may declare (16 Mi): bounds the
/// decoder's scratch memory per thread.
pub const MAX_CHUNK_ELEMENTS: usize = 1 << 24;

const MODE_STORED: u8 = 0;
const MODE_RANS: u8 = 1;

/// The float formats the codec takes, stored little-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FloatFormat {
    /// IEEE 754 single precision: the 8-bit exponent is coded, sign and 23
    /// mantissa bits are stored as 3 raw bytes.
    F32,
    /// IEEE 754 half precision: the high byte (sign, 5-bit exponent, top 2
    /// mantissa bits) is coded, the low 8 mantissa bits are stored raw.
    F16,
    /// bfloat16: the 8-bit exponent is coded, sign and 7 mantissa bits are
    /// stored as one raw byte.
    Bf16,
}

impl FloatFormat {
    /// Bytes per element.
    pub const fn width(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::Bf16 => 2,
        }
    }

    /// Bytes per element stored raw (the rest is the entropy-coded symbol).
    pub const fn raw_width(self) -> usize {
        match self {
            Self::F32 => 3,
            Self::F16 | Self::Bf16 => 1,
        }
    }

    /// The format of a tensor dtype, `None` for dtypes the codec does not take.
    pub fn from_dtype(dtype: tensorpress_tensor::DType) -> Option<Self> {
        use tensorpress_tensor::DType;
        match dtype {
            DType::F32 => Some(Self::F32),
            DType::F16 => Some(Self::F16),
            DType::BF16 => Some(Self::Bf16),
            _ => None,
        }
    }

    /// The tensor dtype of this format.
    pub const fn dtype(self) -> tensorpress_tensor::DType {
        match self {
            Self::F32 => tensorpress_tensor::DType::F32,
            Self::F16 => tensorpress_tensor::DType::F16,
            Self::Bf16 => tensorpress_tensor::DType::BF16,
        }
    }

    const fn tag(self) -> u8 {
        match self {
            Self::F32 => 1,
            Self::F16 => 2,
            Self::Bf16 => 3,
        }
    }

    fn from_tag(tag: u8) -> Result<Self> {
        match tag {
            1 => Ok(Self::F32),
            2 => Ok(Self::F16),
            3 => Ok(Self::Bf16),
            _ => Err(Error::UnknownTag { tag }),
        }
    }
}

/// Settings of the encoder. The decoder reads everything it needs from the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloatCodecConfig {
    /// Elements per independently decodable chunk.
    pub chunk_elements: usize,
    /// Precision of the per-chunk categorical model, in bits (`1..=16`).
    pub precision: u32,
}

impl Default for FloatCodecConfig {
    /// 256 Ki elements per chunk (enough chunks for parallel decoding of
    /// tensors from a few MB on, a model header under 0.1% of a chunk) and
    /// 12-bit frequencies (a 16 KiB decode table that stays in L1).
    fn default() -> Self {
        Self {
            chunk_elements: 1 << 18,
            precision: 12,
        }
    }
}

impl FloatCodecConfig {
    /// Sets the chunk length in elements.
    pub fn chunk_elements(mut self, chunk_elements: usize) -> Self {
        self.chunk_elements = chunk_elements;
        self
    }

    /// Sets the model precision in bits.
    pub fn precision(mut self, precision: u32) -> Self {
        self.precision = precision;
        self
    }

    fn validate(&self) -> Result<()> {
        if !(1..=MAX_CHUNK_ELEMENTS).contains(&self.chunk_elements) {
            return Err(Error::InvalidConfig {
                param: "chunk_elements",
                value: self.chunk_elements.to_string(),
                expected: "in 1..=16777216",
            });
        }
        if !(1..=crate::entropy::MAX_PRECISION).contains(&self.precision) {
            return Err(Error::InvalidPrecision {
                precision: self.precision,
                max: crate::entropy::MAX_PRECISION,
            });
        }
        Ok(())
    }
}

/// Splits one element into its coded symbol and its raw bytes.
#[inline(always)]
fn split(format: FloatFormat, elem: &[u8], raw: &mut [u8]) -> u8 {
    match format {
        FloatFormat::F32 => {
            let v = u32::from_le_bytes([elem[0], elem[1], elem[2], elem[3]]);
            raw[0] = v as u8;
            raw[1] = (v >> 8) as u8;
            raw[2] = ((v >> 16) as u8 & 0x7f) | ((v >> 24) as u8 & 0x80);
            (v >> 23) as u8
        }
        FloatFormat::Bf16 => {
            let v = u16::from_le_bytes([elem[0], elem[1]]);
            raw[0] = (v as u8 & 0x7f) | ((v >> 8) as u8 & 0x80);
            (v >> 7) as u8
        }
        FloatFormat::F16 => {
            raw[0] = elem[0];
            elem[1]
        }
    }
}

/// Puts symbols and raw bytes back together into `out` (`width` bytes per symbol).
fn merge(format: FloatFormat, symbols: &[u8], raw: &[u8], out: &mut [u8]) {
    match format {
        FloatFormat::F32 => {
            for ((o, r), &e) in out
                .chunks_exact_mut(4)
                .zip(raw.chunks_exact(3))
                .zip(symbols)
            {
                let e = u32::from(e);
                let r2 = u32::from(r[2]);
                let v = u32::from(r[0])
                    | u32::from(r[1]) << 8
                    | (r2 & 0x7f) << 16
                    | e << 23
                    | (r2 & 0x80) << 24;
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        FloatFormat::Bf16 => {
            for ((o, &r), &e) in out.chunks_exact_mut(2).zip(raw).zip(symbols) {
                let r = u16::from(r);
                let v = (r & 0x7f) | (u16::from(e) << 7) | ((r & 0x80) << 8);
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        FloatFormat::F16 => {
            for ((o, &r), &e) in out.chunks_exact_mut(2).zip(raw).zip(symbols) {
                o[0] = r;
                o[1] = e;
            }
        }
    }
}

/// Encodes one chunk: its symbol section and its raw section.
fn encode_chunk(format: FloatFormat, elems: &[u8], precision: u32) -> Result<(Vec<u8>, Vec<u8>)> {
    let w = format.width();
    let n = elems.len() / w;
    let mut symbols = vec![0u8; n];
    let mut raw = vec![0u8; n * format.raw_width()];
    let mut counts = [0u64; 256];
    for ((e, r), s) in elems
        .chunks_exact(w)
        .zip(raw.chunks_exact_mut(format.raw_width()))
        .zip(symbols.iter_mut())
    {
        *s = split(format, e, r);
        counts[usize::from(*s)] += 1;
    }
    let used = counts.iter().rposition(|&c| c > 0).map_or(0, |i| i + 1);
    let mut section = vec![MODE_RANS];
    let model = Categorical::from_counts(&counts[..used], precision)?;
    model.write_to(&mut section);
    let words = Rans::<LANES>::encode_categorical(&model, &symbols)?;
    if section.len() + 2 * words.len() > n {
        let mut stored = Vec::with_capacity(1 + n);
        stored.push(MODE_STORED);
        stored.extend_from_slice(&symbols);
        return Ok((stored, raw));
    }
    section.reserve(2 * words.len());
    for word in words {
        section.extend_from_slice(&word.to_le_bytes());
    }
    Ok((section, raw))
}

/// Encodes `bytes`, little-endian elements of `format`, into a self-contained
/// stream (see the [module docs](self)). Chunks are encoded in parallel on the
/// current rayon pool.
///
/// # Errors
/// [`Error::PartialElement`] when `bytes` is not a whole number of elements;
/// [`Error::InvalidConfig`] / [`Error::InvalidPrecision`] for a bad configuration.
pub fn encode(format: FloatFormat, bytes: &[u8], config: &FloatCodecConfig) -> Result<Vec<u8>> {
    config.validate()?;
    let w = format.width();
    if !bytes.len().is_multiple_of(w) {
        return Err(Error::PartialElement {
            bytes: bytes.len(),
            width: w,
        });
    }
    let n = bytes.len() / w;
    let chunks: Vec<(Vec<u8>, Vec<u8>)> = bytes
        .par_chunks(config.chunk_elements * w)
        .map(|c| encode_chunk(format, c, config.precision))
        .collect::<Result<_>>()?;
    let mut out = Vec::with_capacity(
        16 + chunks
            .iter()
            .map(|(s, r)| s.len() + r.len() + 4)
            .sum::<usize>(),
    );
    out.push(format.tag());
    write_uvarint(n as u64, &mut out);
    write_uvarint(config.chunk_elements as u64, &mut out);
    for (s, _) in &chunks {
        write_uvarint(s.len() as u64, &mut out);
    }
    for (s, r) in &chunks {
        out.extend_from_slice(s);
        out.extend_from_slice(r);
    }
    Ok(out)
}

/// What a stream's header declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamInfo {
    /// The element format.
    pub format: FloatFormat,
    /// Elements in the stream.
    pub elements: usize,
    /// Elements per chunk (the last may hold fewer).
    pub chunk_elements: usize,
    /// Number of chunks.
    pub chunks: usize,
}

impl StreamInfo {
    /// Bytes the decoded tensor takes.
    pub fn decoded_bytes(&self) -> usize {
        // Cannot overflow: `parse` checks `elements · raw_width` against the input.
        self.elements * self.format.width()
    }
}

/// A parsed header: the info and each chunk's (symbol section, raw section).
struct Parsed<'a> {
    info: StreamInfo,
    chunks: Vec<(&'a [u8], &'a [u8])>,
}

fn read_len(bytes: &[u8], pos: &mut usize, what: &'static str) -> Result<usize> {
    let (v, used) = read_uvarint(&bytes[*pos..])?;
    *pos += used;
    usize::try_from(v).map_err(|_| Error::TooLarge {
        what,
        requested: u128::from(v),
        limit: usize::MAX as u128,
    })
}

fn truncated(needed: usize, available: usize) -> Error {
    Error::Truncated {
        unit: "bytes",
        needed,
        available,
    }
}

fn parse(bytes: &[u8]) -> Result<Parsed<'_>> {
    let &tag = bytes.first().ok_or(truncated(1, 0))?;
    let format = FloatFormat::from_tag(tag)?;
    let mut pos = 1;
    let elements = read_len(bytes, &mut pos, "element count")?;
    let chunk_elements = read_len(bytes, &mut pos, "chunk length")?;
    if !(1..=MAX_CHUNK_ELEMENTS).contains(&chunk_elements) {
        return Err(Error::TooLarge {
            what: "chunk length",
            requested: chunk_elements as u128,
            limit: MAX_CHUNK_ELEMENTS as u128,
        });
    }
    // Every element keeps `raw_width ≥ 1` raw bytes, so the input bounds the count.
    let raw_total = elements.checked_mul(format.raw_width());
    if raw_total.is_none_or(|r| r > bytes.len()) {
        return Err(Error::TooLarge {
            what: "element count",
            requested: elements as u128,
            limit: (bytes.len() / format.raw_width()) as u128,
        });
    }
    let n_chunks = elements.div_ceil(chunk_elements);
    let mut lens = Vec::with_capacity(n_chunks.min(bytes.len()));
    for _ in 0..n_chunks {
        lens.push(read_len(bytes, &mut pos, "chunk section")?);
    }
    let mut chunks = Vec::with_capacity(n_chunks);
    for (c, &len) in lens.iter().enumerate() {
        let count = (elements - c * chunk_elements).min(chunk_elements);
        let raw_len = count * format.raw_width();
        let end = pos
            .checked_add(len)
            .and_then(|e| e.checked_add(raw_len))
            .filter(|&e| e <= bytes.len())
            .ok_or(truncated(
                pos.saturating_add(len).saturating_add(raw_len),
                bytes.len(),
            ))?;
        chunks.push((&bytes[pos..pos + len], &bytes[pos + len..end]));
        pos = end;
    }
    if pos < bytes.len() {
        return Err(Error::TrailingData {
            unit: "bytes",
            count: bytes.len() - pos,
        });
    }
    Ok(Parsed {
        info: StreamInfo {
            format,
            elements,
            chunk_elements,
            chunks: n_chunks,
        },
        chunks,
    })
}

/// Reads and checks a stream's header without decoding it.
///
/// # Errors
/// As [`decode_into`], for faults of the header and the section lengths.
pub fn stream_info(stream: &[u8]) -> Result<StreamInfo> {
    Ok(parse(stream)?.info)
}

/// Decodes one chunk into `out` (its elements' bytes), with `symbols` as scratch.
fn decode_chunk(
    format: FloatFormat,
    section: &[u8],
    raw: &[u8],
    out: &mut [u8],
    symbols: &mut Vec<u8>,
) -> Result<()> {
    let n = out.len() / format.width();
    symbols.resize(n, 0);
    let (&mode, body) = section.split_first().ok_or(truncated(1, 0))?;
    match mode {
        MODE_STORED => {
            if body.len() != n {
                return Err(Error::Malformed {
                    what: "stored symbol section of the wrong length",
                });
            }
            merge(format, body, raw, out);
            Ok(())
        }
        MODE_RANS => {
            let (model, used) = Categorical::read_from(body)?;
            let payload = &body[used..];
            if !payload.len().is_multiple_of(2) {
                return Err(truncated(payload.len() + 1, payload.len()));
            }
            let words: Vec<u16> = payload
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect();
            if let Some(table) = fused::packed_table(&model) {
                return fused::decode(format, &table, model.precision(), &words, raw, out);
            }
            let table: DecodeTable = model.decode_table();
            Rans::<LANES>::decode_categorical(&table, &words, symbols)?;
            merge(format, symbols, raw, out);
            Ok(())
        }
        tag => Err(Error::UnknownTag { tag }),
    }
}

/// Decodes a stream into `out`, which must hold exactly its decoded bytes;
/// chunks run in parallel on the current rayon pool. Returns the stream's info.
///
/// # Errors
/// [`Error::OutputLength`] when `out` has the wrong size; for a damaged or
/// hostile stream [`Error::Truncated`], [`Error::TrailingData`],
/// [`Error::TooLarge`], [`Error::UnknownTag`], [`Error::CorruptStream`] and the
/// model's read errors. Never panics on any input.
pub fn decode_into(stream: &[u8], out: &mut [u8]) -> Result<StreamInfo> {
    let parsed = parse(stream)?;
    let info = parsed.info;
    if out.len() != info.decoded_bytes() {
        return Err(Error::OutputLength {
            unit: "bytes",
            expected: info.decoded_bytes(),
            got: out.len(),
        });
    }
    if info.elements == 0 {
        return Ok(info);
    }
    let format = info.format;
    let chunk_bytes = info.chunk_elements * format.width();
    // Chunks go in pairs, which the fused decoder runs in lockstep.
    out.par_chunks_mut(2 * chunk_bytes)
        .zip(parsed.chunks.par_chunks(2))
        .try_for_each_init(Vec::new, |symbols: &mut Vec<u8>, (o, pair)| {
            let (first, second) = o.split_at_mut(chunk_bytes.min(o.len()));
            match *pair {
                [(section, raw)] => decode_chunk(format, section, raw, first, symbols),
                [a, b] => decode_two(format, a, b, first, second, symbols),
                _ => Err(Error::Malformed {
                    what: "chunk table",
                }),
            }
        })?;
    Ok(info)
}

/// The packed table, precision and words of a rANS chunk the fused decoder
/// takes; `None` for stored chunks and wide models.
#[allow(clippy::type_complexity)]
fn fused_parts(section: &[u8]) -> Result<Option<(Vec<u32>, u32, Vec<u16>)>> {
    let (&mode, body) = section.split_first().ok_or(truncated(1, 0))?;
    if mode != MODE_RANS {
        return Ok(None);
    }
    let (model, used) = Categorical::read_from(body)?;
    let payload = &body[used..];
    if !payload.len().is_multiple_of(2) {
        return Err(truncated(payload.len() + 1, payload.len()));
    }
    let Some(table) = fused::packed_table(&model) else {
        return Ok(None);
    };
    let words: Vec<u16> = payload
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect();
    Ok(Some((table, model.precision(), words)))
}

/// Decodes two chunks, together when both take the fused decoder.
fn decode_two(
    format: FloatFormat,
    (sa, ra): (&[u8], &[u8]),
    (sb, rb): (&[u8], &[u8]),
    oa: &mut [u8],
    ob: &mut [u8],
    symbols: &mut Vec<u8>,
) -> Result<()> {
    let (fa, fb) = (fused_parts(sa)?, fused_parts(sb)?);
    match (fa, fb) {
        (Some((ta, pa, wa)), Some((tb, pb, wb))) => {
            fused::decode_pair(format, (&ta, pa, &wa, ra, oa), (&tb, pb, &wb, rb, ob))
        }
        _ => {
            decode_chunk(format, sa, ra, oa, symbols)?;
            decode_chunk(format, sb, rb, ob, symbols)
        }
    }
}

/// Decodes a stream, refusing one whose output would exceed `max_bytes`.
///
/// # Errors
/// [`Error::TooLarge`] past `max_bytes`, and those of [`decode_into`].
pub fn decode(stream: &[u8], max_bytes: usize) -> Result<(FloatFormat, Vec<u8>)> {
    let info = stream_info(stream)?;
    if info.decoded_bytes() > max_bytes {
        return Err(Error::TooLarge {
            what: "decoded tensor bytes",
            requested: info.decoded_bytes() as u128,
            limit: max_bytes as u128,
        });
    }
    let mut out = vec![0u8; info.decoded_bytes()];
    decode_into(stream, &mut out)?;
    Ok((info.format, out))
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// The element types of the typed helpers: `f32`, `half::f16`, `half::bf16`.
pub trait LosslessFloat: Copy + sealed::Sealed + Send + Sync {
    /// The stream format of the type.
    const FORMAT: FloatFormat;

    /// Appends the little-endian bytes of `self`.
    fn put_le(self, out: &mut Vec<u8>);

    /// The value of little-endian bytes (`FORMAT.width()` of them).
    fn from_le(bytes: &[u8]) -> Self;
}

impl LosslessFloat for f32 {
    const FORMAT: FloatFormat = FloatFormat::F32;

    fn put_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bits().to_le_bytes());
    }

    fn from_le(b: &[u8]) -> Self {
        f32::from_bits(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

impl LosslessFloat for f16 {
    const FORMAT: FloatFormat = FloatFormat::F16;

    fn put_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bits().to_le_bytes());
    }

    fn from_le(b: &[u8]) -> Self {
        f16::from_bits(u16::from_le_bytes([b[0], b[1]]))
    }
}

impl LosslessFloat for bf16 {
    const FORMAT: FloatFormat = FloatFormat::Bf16;

    fn put_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bits().to_le_bytes());
    }

    fn from_le(b: &[u8]) -> Self {
        bf16::from_bits(u16::from_le_bytes([b[0], b[1]]))
    }
}

/// Encodes typed floats (see [`encode`]); bit-exact for every value, NaN
/// payloads included.
///
/// # Errors
/// As [`encode`].
pub fn encode_floats<T: LosslessFloat>(values: &[T], config: &FloatCodecConfig) -> Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(values.len() * T::FORMAT.width());
    for &v in values {
        v.put_le(&mut bytes);
    }
    encode(T::FORMAT, &bytes, config)
}

/// Decodes a stream of `T`, refusing more than `max_elements` elements.
///
/// # Errors
/// [`Error::PayloadKind`] when the stream holds another format, and those of [`decode`].
pub fn decode_floats<T: LosslessFloat>(stream: &[u8], max_elements: usize) -> Result<Vec<T>> {
    let info = stream_info(stream)?;
    if info.format != T::FORMAT {
        return Err(Error::PayloadKind {
            op: "decode_floats",
            expected: format_name(T::FORMAT),
            got: format_name(info.format),
        });
    }
    let max_bytes = max_elements.saturating_mul(T::FORMAT.width());
    let (_, bytes) = decode(stream, max_bytes)?;
    Ok(bytes
        .chunks_exact(T::FORMAT.width())
        .map(T::from_le)
        .collect())
}

fn format_name(format: FloatFormat) -> &'static str {
    match format {
        FloatFormat::F32 => "f32",
        FloatFormat::F16 => "f16",
        FloatFormat::Bf16 => "bf16",
    }
}

impl std::fmt::Display for FloatFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(format_name(*self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussianish(n: usize) -> Vec<f32> {
        (0..n as u64)
            .map(|i| {
                let h = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let u = (h >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                let v = ((h >> 8) & 0xffff) as f32 / 65536.0 - 0.5;
                0.02 * (u + v) * (1.0 + 4.0 * u * u)
            })
            .collect()
    }

    #[test]
    fn every_format_round_trips_bit_exactly_across_chunks() {
        let x = gaussianish(10_000);
        let config = FloatCodecConfig::default().chunk_elements(1000 - 3);
        let s = encode_floats(&x, &config).unwrap();
        let back: Vec<f32> = decode_floats(&s, x.len()).unwrap();
        assert!(x.iter().zip(&back).all(|(a, b)| a.to_bits() == b.to_bits()));
        // f32 keeps 3 of 4 bytes raw; the exponent costs ~3 bits.
        assert!(s.len() < x.len() * 3 + x.len() / 2, "{}", s.len());

        let h: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
        let s = encode_floats(&h, &config).unwrap();
        let back: Vec<bf16> = decode_floats(&s, h.len()).unwrap();
        assert!(h.iter().zip(&back).all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(s.len() < h.len() * 3 / 2, "{}", s.len());

        let h: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
        let s = encode_floats(&h, &config).unwrap();
        let back: Vec<f16> = decode_floats(&s, h.len()).unwrap();
        assert!(h.iter().zip(&back).all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    #[test]
    fn special_values_survive() {
        let x = [
            0.0f32,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::from_bits(0x7fc0_1234),
            f32::from_bits(0xff80_0001),
            f32::from_bits(1),
            f32::from_bits(0x8000_0001),
            f32::MAX,
            f32::MIN_POSITIVE,
        ];
        let s = encode_floats(&x, &FloatCodecConfig::default()).unwrap();
        let back: Vec<f32> = decode_floats(&s, 10).unwrap();
        assert!(x.iter().zip(&back).all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    #[test]
    fn incompressible_symbols_are_stored() {
        // Every exponent equally likely: coding cannot win, the chunk is stored.
        let bytes: Vec<u8> = (0..4096u32)
            .flat_map(|i| (((i * 7919) % 256) << 7 | (i % 128)).to_le_bytes()[..2].to_vec())
            .collect();
        let s = encode(FloatFormat::Bf16, &bytes, &FloatCodecConfig::default()).unwrap();
        assert!(s.len() <= bytes.len() + 16, "{}", s.len());
        assert_eq!(decode(&s, bytes.len()).unwrap().1, bytes);
    }

    #[test]
    fn bad_inputs_and_configs_are_errors() {
        let c = FloatCodecConfig::default();
        assert!(matches!(
            encode(FloatFormat::F32, &[0; 6], &c),
            Err(Error::PartialElement { bytes: 6, width: 4 })
        ));
        assert!(encode(FloatFormat::F32, &[0; 8], &c.chunk_elements(0)).is_err());
        assert!(encode(FloatFormat::F32, &[0; 8], &c.precision(17)).is_err());
        let s = encode_floats(&gaussianish(3000), &c.chunk_elements(512)).unwrap();
        assert!(decode(&s, 11_999).is_err());
        assert!(decode_floats::<bf16>(&s, 3000).is_err());
        for cut in [0, 1, 2, 5, s.len() / 2, s.len() - 1] {
            assert!(decode(&s[..cut], 12_000).is_err(), "cut {cut}");
        }
        let mut longer = s.clone();
        longer.push(0);
        assert!(decode(&longer, 12_000).is_err());
        let mut out = vec![0u8; 11_996];
        assert!(matches!(
            decode_into(&s, &mut out),
            Err(Error::OutputLength { .. })
        ));
        let empty = encode(FloatFormat::F16, &[], &c).unwrap();
        assert_eq!(decode(&empty, 0).unwrap().1, Vec::<u8>::new());
    }
}
