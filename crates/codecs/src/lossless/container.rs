//! The `.tpz` container: a whole checkpoint, each tensor stored by the codec
//! that suits its element type.
//!
//! # Byte layout (version 1)
//!
//! ```text
//! 0   8 bytes  magic "TPZLOSS\0"
//! 8   u32 LE   version (1)
//! 12  u32 LE   H, length of the table in bytes (≤ 256 MiB)
//! 16  u32 LE   CRC32 (IEEE) of the table
//! 20  H bytes  table
//! 20+H         data section: the tensors' stored bytes, to the end of the file
//!
//! table:
//!   varint M, then M × (varint key length, key, varint value length, value)   metadata, UTF-8
//!   varint T, then T × tensor:
//!     varint name length, name (UTF-8, unique)
//!     u8     dtype code (see `dtype_code`: 0 bool, 1 u8, 2 i8, 3 u16, 4 i16, 5 u32,
//!            6 i32, 7 u64, 8 i64, 9 f16, 10 bf16, 11 f32, 12 f64, 13 f8e4m3, 14 f8e5m2)
//!     u8     codec (0 raw, 1 lossless float, 2 rANS bytes)
//!     varint rank (≤ 16), then one varint per dimension
//!     varint offset of the stored bytes from the start of the data section
//!     varint stored length in bytes
//!     u32 LE CRC32 of the stored bytes
//! ```
//!
//! Codecs: *raw* is the little-endian tensor bytes as safetensors has them;
//! *lossless float* is a [`float`] stream (f32, f16, bf16 only);
//! *rANS bytes* is a [`rans::compress`] stream of the bytes (1-byte types only:
//! already-quantized codes, FP8).
//!
//! The reader checks the magic, the version, the table's checksum, every field
//! (UTF-8, unique names, codec against dtype, shape sizes without overflow,
//! ranges inside the data section and not overlapping, nothing after the last
//! range), and each tensor's checksum before decoding it. Gaps between ranges
//! are allowed (a later writer may align payloads).

use std::collections::{BTreeMap, HashMap};

use tensorpress_tensor::DType;

use super::float::{self, FloatCodecConfig, FloatFormat};
use crate::entropy::rans;
use crate::varint::{read_uvarint, write_uvarint};
use crate::{Error, Result};

/// The first 8 bytes of every container.
pub const MAGIC: [u8; 8] = *b"TPZLOSS\0";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Largest table accepted, in bytes.
pub const MAX_TABLE_BYTES: usize = 256 << 20;
/// Largest tensor rank accepted.
pub const MAX_RANK: usize = 16;
/// Bytes before the table.
const PREAMBLE: usize = 20;
const FORMAT: &str = "tpz lossless container";

/// How a tensor's bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TensorCodec {
    /// The tensor's bytes as they are.
    Raw,
    /// The exponent-coding float codec ([`float`]); f32, f16, bf16.
    LosslessFloat,
    /// The bytes as rANS-coded symbols ([`rans::compress`]); 1-byte dtypes.
    RansBytes,
}

impl TensorCodec {
    /// The codec's name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::LosslessFloat => "lossless-float",
            Self::RansBytes => "rans-bytes",
        }
    }

    const fn id(self) -> u8 {
        match self {
            Self::Raw => 0,
            Self::LosslessFloat => 1,
            Self::RansBytes => 2,
        }
    }

    fn from_id(id: u8) -> Result<Self> {
        match id {
            0 => Ok(Self::Raw),
            1 => Ok(Self::LosslessFloat),
            2 => Ok(Self::RansBytes),
            tag => Err(Error::UnknownTag { tag }),
        }
    }

    /// Whether the codec can store tensors of `dtype`.
    pub fn accepts(self, dtype: DType) -> bool {
        match self {
            Self::Raw => true,
            Self::LosslessFloat => FloatFormat::from_dtype(dtype).is_some(),
            Self::RansBytes => dtype.size_in_bytes() == 1,
        }
    }
}

/// The on-disk code of a dtype; `None` for a dtype this version cannot store.
fn dtype_code(dtype: DType) -> Option<u8> {
    DTYPES.iter().position(|&d| d == dtype).map(|i| i as u8)
}

/// Dtypes by their on-disk code (the position); append only.
const DTYPES: [DType; 15] = [
    DType::Bool,
    DType::U8,
    DType::I8,
    DType::U16,
    DType::I16,
    DType::U32,
    DType::I32,
    DType::U64,
    DType::I64,
    DType::F16,
    DType::BF16,
    DType::F32,
    DType::F64,
    DType::F8E4M3,
    DType::F8E5M2,
];

/// Bytes a tensor of `dtype` and `shape` takes, checked for overflow.
fn byte_size(dtype: DType, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(dtype.size_in_bytes(), |acc, &d| acc.checked_mul(d))
        .ok_or(Error::TooLarge {
            what: "tensor bytes",
            requested: u128::MAX,
            limit: usize::MAX as u128,
        })
}

/// One tensor of a container, as its table describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TensorEntry {
    /// The tensor's name.
    pub name: String,
    /// Its element type.
    pub dtype: DType,
    /// Its shape, row-major.
    pub shape: Vec<usize>,
    /// How it is stored.
    pub codec: TensorCodec,
    /// Start of the stored bytes within the data section.
    pub offset: usize,
    /// Stored bytes.
    pub stored_len: usize,
    /// CRC32 of the stored bytes.
    pub crc32: u32,
}

impl TensorEntry {
    /// Bytes of the decoded tensor.
    pub fn decoded_len(&self) -> usize {
        // Checked when the entry was made.
        byte_size(self.dtype, &self.shape).unwrap_or(usize::MAX)
    }
}

/// Builds a container in memory: [`add`](Self::add) encodes each tensor at once.
#[derive(Debug, Default)]
pub struct LosslessWriter {
    config: FloatCodecConfig,
    metadata: BTreeMap<String, String>,
    entries: Vec<TensorEntry>,
    payloads: Vec<Vec<u8>>,
    names: HashMap<String, usize>,
    data_len: usize,
    original: usize,
}

impl LosslessWriter {
    /// A writer with the default float-codec settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// A writer with the given float-codec settings.
    pub fn with_config(config: FloatCodecConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Adds a metadata entry (safetensors' `__metadata__`), replacing any of that key.
    pub fn add_metadata(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.metadata.insert(key.into(), value.into());
    }

    /// The codec [`add`](Self::add) picks: lossless float for f32, f16 and
    /// bf16, rANS for 1-byte types when it is smaller than the raw bytes
    /// (decided by trying), raw otherwise.
    pub fn default_codec(dtype: DType) -> TensorCodec {
        if FloatFormat::from_dtype(dtype).is_some() {
            TensorCodec::LosslessFloat
        } else if dtype.size_in_bytes() == 1 {
            TensorCodec::RansBytes
        } else {
            TensorCodec::Raw
        }
    }

    /// Adds a tensor (little-endian bytes, row-major) with [`default_codec`](Self::default_codec).
    ///
    /// # Errors
    /// As [`add_with`](Self::add_with).
    pub fn add(&mut self, name: &str, dtype: DType, shape: &[usize], bytes: &[u8]) -> Result<()> {
        self.add_with(name, dtype, shape, bytes, Self::default_codec(dtype))
    }

    /// Adds a tensor stored with `codec`. A rANS-bytes tensor that would not
    /// shrink is stored raw.
    ///
    /// # Errors
    /// [`Error::DuplicateTensor`], [`Error::CodecMismatch`], [`Error::TooLarge`]
    /// for a rank above [`MAX_RANK`] or a size overflow,
    /// [`Error::OutputLength`] when `bytes` does not match the shape, and the
    /// codec's errors.
    pub fn add_with(
        &mut self,
        name: &str,
        dtype: DType,
        shape: &[usize],
        bytes: &[u8],
        codec: TensorCodec,
    ) -> Result<()> {
        if self.names.contains_key(name) {
            return Err(Error::DuplicateTensor {
                name: name.to_owned(),
            });
        }
        if !codec.accepts(dtype) || dtype_code(dtype).is_none() {
            return Err(Error::CodecMismatch {
                tensor: name.to_owned(),
                codec: codec.name(),
                dtype: format!("{dtype:?}"),
            });
        }
        check_rank(shape.len())?;
        let expected = byte_size(dtype, shape)?;
        if bytes.len() != expected {
            return Err(Error::OutputLength {
                unit: "bytes",
                expected,
                got: bytes.len(),
            });
        }
        let (codec, payload) = match codec {
            TensorCodec::Raw => (codec, bytes.to_vec()),
            TensorCodec::LosslessFloat => {
                // `accepts` checked the dtype.
                let format = FloatFormat::from_dtype(dtype).ok_or(Error::Malformed {
                    what: "float codec without a float format",
                })?;
                (codec, float::encode(format, bytes, &self.config)?)
            }
            TensorCodec::RansBytes => {
                let coded = rans::compress(bytes, rans::DEFAULT_PRECISION)?;
                if coded.len() < bytes.len() {
                    (codec, coded)
                } else {
                    (TensorCodec::Raw, bytes.to_vec())
                }
            }
        };
        self.entries.push(TensorEntry {
            name: name.to_owned(),
            dtype,
            shape: shape.to_vec(),
            codec,
            offset: self.data_len,
            stored_len: payload.len(),
            crc32: crc32fast::hash(&payload),
        });
        self.names.insert(name.to_owned(), self.entries.len() - 1);
        self.data_len += payload.len();
        self.original += bytes.len();
        self.payloads.push(payload);
        Ok(())
    }

    /// The tensors added so far.
    pub fn entries(&self) -> &[TensorEntry] {
        &self.entries
    }

    /// Bytes of the tensors as given.
    pub fn original_bytes(&self) -> usize {
        self.original
    }

    /// The table, as written after the preamble.
    fn table(&self) -> Vec<u8> {
        let mut t = Vec::new();
        write_uvarint(self.metadata.len() as u64, &mut t);
        for (k, v) in &self.metadata {
            write_str(k, &mut t);
            write_str(v, &mut t);
        }
        write_uvarint(self.entries.len() as u64, &mut t);
        for e in &self.entries {
            write_str(&e.name, &mut t);
            // `add_with` refused dtypes without a code.
            t.push(dtype_code(e.dtype).unwrap_or(u8::MAX));
            t.push(e.codec.id());
            write_uvarint(e.shape.len() as u64, &mut t);
            for &d in &e.shape {
                write_uvarint(d as u64, &mut t);
            }
            write_uvarint(e.offset as u64, &mut t);
            write_uvarint(e.stored_len as u64, &mut t);
            t.extend_from_slice(&e.crc32.to_le_bytes());
        }
        t
    }

    fn preamble(table: &[u8]) -> Result<[u8; PREAMBLE]> {
        if table.len() > MAX_TABLE_BYTES {
            return Err(Error::TooLarge {
                what: "container table bytes",
                requested: table.len() as u128,
                limit: MAX_TABLE_BYTES as u128,
            });
        }
        let mut p = [0u8; PREAMBLE];
        p[..8].copy_from_slice(&MAGIC);
        p[8..12].copy_from_slice(&VERSION.to_le_bytes());
        p[12..16].copy_from_slice(&(table.len() as u32).to_le_bytes());
        p[16..20].copy_from_slice(&crc32fast::hash(table).to_le_bytes());
        Ok(p)
    }

    /// Total bytes of the container.
    pub fn container_bytes(&self) -> usize {
        PREAMBLE + self.table().len() + self.data_len
    }

    /// The whole container.
    ///
    /// # Errors
    /// [`Error::TooLarge`] for a table past [`MAX_TABLE_BYTES`].
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let table = self.table();
        let preamble = Self::preamble(&table)?;
        let mut out = Vec::with_capacity(PREAMBLE + table.len() + self.data_len);
        out.extend_from_slice(&preamble);
        out.extend_from_slice(&table);
        for p in &self.payloads {
            out.extend_from_slice(p);
        }
        Ok(out)
    }
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    write_uvarint(s.len() as u64, out);
    out.extend_from_slice(s.as_bytes());
}

fn check_rank(rank: usize) -> Result<()> {
    if rank > MAX_RANK {
        return Err(Error::TooLarge {
            what: "tensor rank",
            requested: rank as u128,
            limit: MAX_RANK as u128,
        });
    }
    Ok(())
}

/// A cursor over the table.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn usize(&mut self, what: &'static str) -> Result<usize> {
        let (v, used) = read_uvarint(&self.bytes[self.pos..])?;
        self.pos += used;
        usize::try_from(v).map_err(|_| Error::TooLarge {
            what,
            requested: u128::from(v),
            limit: usize::MAX as u128,
        })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(Error::Truncated {
                unit: "table bytes",
                needed: self.pos.saturating_add(n),
                available: self.bytes.len(),
            })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn string(&mut self, what: &'static str) -> Result<String> {
        let n = self.usize(what)?;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| Error::Malformed {
            what: "a name or metadata string is not UTF-8",
        })
    }
}

/// A container read from bytes, its table checked (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct LosslessFile<'a> {
    data: &'a [u8],
    metadata: BTreeMap<String, String>,
    entries: Vec<TensorEntry>,
    names: HashMap<String, usize>,
    max_tensor_bytes: usize,
}

impl<'a> LosslessFile<'a> {
    /// The default cap on a decoded tensor: 64 GiB.
    pub const DEFAULT_MAX_TENSOR_BYTES: usize = 1 << 36;

    /// Parses and checks the preamble and the table of a container.
    ///
    /// # Errors
    /// [`Error::BadMagic`], [`Error::UnsupportedVersion`],
    /// [`Error::ChecksumMismatch`] (table), [`Error::Truncated`],
    /// [`Error::TooLarge`], [`Error::Malformed`], [`Error::UnknownTag`],
    /// [`Error::DuplicateTensor`], [`Error::CodecMismatch`],
    /// [`Error::OverlappingTensors`], [`Error::TrailingData`].
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        if bytes.len() < PREAMBLE {
            if !MAGIC.starts_with(&bytes[..bytes.len().min(8)]) {
                return Err(Error::BadMagic {
                    format: FORMAT,
                    found: bytes[..bytes.len().min(8)].to_vec(),
                });
            }
            return Err(Error::Truncated {
                unit: "bytes",
                needed: PREAMBLE,
                available: bytes.len(),
            });
        }
        if bytes[..8] != MAGIC {
            return Err(Error::BadMagic {
                format: FORMAT,
                found: bytes[..8].to_vec(),
            });
        }
        let word =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let version = word(8);
        if version != VERSION {
            return Err(Error::UnsupportedVersion {
                format: FORMAT,
                version,
                supported: VERSION,
            });
        }
        let table_len = word(12) as usize;
        if table_len > MAX_TABLE_BYTES {
            return Err(Error::TooLarge {
                what: "container table bytes",
                requested: table_len as u128,
                limit: MAX_TABLE_BYTES as u128,
            });
        }
        let data_start = PREAMBLE + table_len;
        if bytes.len() < data_start {
            return Err(Error::Truncated {
                unit: "bytes",
                needed: data_start,
                available: bytes.len(),
            });
        }
        let table = &bytes[PREAMBLE..data_start];
        let computed = crc32fast::hash(table);
        if computed != word(16) {
            return Err(Error::ChecksumMismatch {
                section: "the table".to_owned(),
                stored: word(16),
                computed,
            });
        }
        let data = &bytes[data_start..];
        let mut r = Reader {
            bytes: table,
            pos: 0,
        };
        let n_meta = r.usize("metadata entries")?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_meta {
            let k = r.string("metadata key length")?;
            let v = r.string("metadata value length")?;
            if metadata.insert(k, v).is_some() {
                return Err(Error::Malformed {
                    what: "a metadata key occurs twice",
                });
            }
        }
        let n_tensors = r.usize("tensor count")?;
        // Each entry takes at least 11 bytes: a bound before allocating.
        let mut entries = Vec::with_capacity(n_tensors.min(table.len() / 11));
        let mut names = HashMap::new();
        for _ in 0..n_tensors {
            let e = read_entry(&mut r)?;
            if e.offset
                .checked_add(e.stored_len)
                .is_none_or(|end| end > data.len())
            {
                return Err(Error::Truncated {
                    unit: "data bytes",
                    needed: e.offset.saturating_add(e.stored_len),
                    available: data.len(),
                });
            }
            if names.insert(e.name.clone(), entries.len()).is_some() {
                return Err(Error::DuplicateTensor { name: e.name });
            }
            entries.push(e);
        }
        if r.pos < table.len() {
            return Err(Error::TrailingData {
                unit: "table bytes",
                count: table.len() - r.pos,
            });
        }
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by_key(|&i| (entries[i].offset, entries[i].stored_len));
        let mut end = 0usize;
        let mut last: Option<usize> = None;
        for &i in &order {
            let e = &entries[i];
            if let Some(prev) = last {
                if e.offset < end {
                    return Err(Error::OverlappingTensors {
                        first: entries[prev].name.clone(),
                        second: e.name.clone(),
                    });
                }
            }
            if e.stored_len > 0 {
                end = e.offset + e.stored_len;
                last = Some(i);
            }
        }
        if end < data.len() {
            return Err(Error::TrailingData {
                unit: "bytes",
                count: data.len() - end,
            });
        }
        Ok(Self {
            data,
            metadata,
            entries,
            names,
            max_tensor_bytes: Self::DEFAULT_MAX_TENSOR_BYTES,
        })
    }

    /// Sets the cap on a decoded tensor's bytes (a rANS stream of one symbol
    /// can declare any size at almost no cost).
    pub fn with_max_tensor_bytes(mut self, max: usize) -> Self {
        self.max_tensor_bytes = max;
        self
    }

    /// The tensors, in the order they were written.
    pub fn tensors(&self) -> &[TensorEntry] {
        &self.entries
    }

    /// The entry of a tensor.
    pub fn entry(&self, name: &str) -> Option<&TensorEntry> {
        self.names.get(name).map(|&i| &self.entries[i])
    }

    /// The metadata.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Bytes of all tensors once decoded.
    pub fn decoded_bytes(&self) -> usize {
        self.entries
            .iter()
            .map(TensorEntry::decoded_len)
            .fold(0, usize::saturating_add)
    }

    fn require(&self, name: &str) -> Result<&TensorEntry> {
        self.entry(name).ok_or_else(|| Error::TensorNotFound {
            name: name.to_owned(),
        })
    }

    /// The stored bytes of a tensor, their checksum verified.
    ///
    /// # Errors
    /// [`Error::TensorNotFound`], [`Error::ChecksumMismatch`].
    pub fn stored(&self, name: &str) -> Result<&'a [u8]> {
        let e = self.require(name)?;
        let bytes = &self.data[e.offset..e.offset + e.stored_len];
        let computed = crc32fast::hash(bytes);
        if computed != e.crc32 {
            return Err(Error::ChecksumMismatch {
                section: format!("tensor {}", e.name),
                stored: e.crc32,
                computed,
            });
        }
        Ok(bytes)
    }

    /// Decodes a tensor into `out`, which must hold exactly its bytes.
    ///
    /// # Errors
    /// [`Error::OutputLength`], those of [`stored`](Self::stored) and of the
    /// tensor's codec; [`Error::Malformed`] when a stream decodes to a tensor
    /// of another size or format than the table declares.
    pub fn decode_into(&self, name: &str, out: &mut [u8]) -> Result<()> {
        let e = self.require(name)?;
        let size = e.decoded_len();
        if out.len() != size {
            return Err(Error::OutputLength {
                unit: "bytes",
                expected: size,
                got: out.len(),
            });
        }
        let stored = self.stored(name)?;
        match e.codec {
            TensorCodec::Raw => out.copy_from_slice(stored),
            TensorCodec::LosslessFloat => {
                let info = float::stream_info(stored)?;
                if Some(info.format) != FloatFormat::from_dtype(e.dtype) {
                    return Err(Error::Malformed {
                        what: "float stream of another format than the tensor's dtype",
                    });
                }
                if info.decoded_bytes() != size {
                    return Err(Error::Malformed {
                        what: "float stream of another size than the tensor's shape",
                    });
                }
                float::decode_into(stored, out)?;
            }
            TensorCodec::RansBytes => {
                let symbols = rans::decompress::<u8>(stored, size)?;
                if symbols.len() != size {
                    return Err(Error::Malformed {
                        what: "rANS stream of another size than the tensor's shape",
                    });
                }
                out.copy_from_slice(&symbols);
            }
        }
        Ok(())
    }

    /// Decodes a tensor.
    ///
    /// # Errors
    /// [`Error::TooLarge`] past the cap ([`with_max_tensor_bytes`](Self::with_max_tensor_bytes)),
    /// and those of [`decode_into`](Self::decode_into).
    pub fn decode(&self, name: &str) -> Result<Vec<u8>> {
        let size = self.require(name)?.decoded_len();
        if size > self.max_tensor_bytes {
            return Err(Error::TooLarge {
                what: "decoded tensor bytes",
                requested: size as u128,
                limit: self.max_tensor_bytes as u128,
            });
        }
        let mut out = vec![0u8; size];
        self.decode_into(name, &mut out)?;
        Ok(out)
    }

    /// Checks every tensor's checksum.
    ///
    /// # Errors
    /// The first [`Error::ChecksumMismatch`].
    pub fn verify(&self) -> Result<()> {
        for e in &self.entries {
            self.stored(&e.name)?;
        }
        Ok(())
    }
}

fn read_entry(r: &mut Reader<'_>) -> Result<TensorEntry> {
    let name = r.string("tensor name length")?;
    let code = r.byte()?;
    let dtype = *DTYPES
        .get(usize::from(code))
        .ok_or(Error::UnknownTag { tag: code })?;
    let codec = TensorCodec::from_id(r.byte()?)?;
    if !codec.accepts(dtype) {
        return Err(Error::CodecMismatch {
            tensor: name,
            codec: codec.name(),
            dtype: format!("{dtype:?}"),
        });
    }
    let rank = r.usize("tensor rank")?;
    check_rank(rank)?;
    let mut shape = Vec::with_capacity(rank);
    for _ in 0..rank {
        shape.push(r.usize("dimension")?);
    }
    let size = byte_size(dtype, &shape)?;
    let offset = r.usize("tensor offset")?;
    let stored_len = r.usize("tensor stored length")?;
    if codec == TensorCodec::Raw && stored_len != size {
        return Err(Error::Malformed {
            what: "raw tensor whose stored length differs from its shape",
        });
    }
    let c = r.take(4)?;
    Ok(TensorEntry {
        name,
        dtype,
        shape,
        codec,
        offset,
        stored_len,
        crc32: u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
    })
}
