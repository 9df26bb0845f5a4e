//! [`SafetensorsWriter`]: single files and sharded Hugging Face folders, written atomically.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use ndarray::ArrayViewD;
use tensorpress_tensor::{DType, Element, TensorView};

use super::header::{MAX_HEADER_SIZE, METADATA_KEY};
use super::model::{INDEX_FILE, SINGLE_FILE};
use crate::fs::{write_all, write_atomic};
use crate::{Error, Result};

/// An element type that can be stored little-endian ([`SafetensorsWriter::add_array`]).
pub trait StoreElement: Element + sealed::Sealed {
    /// Appends the little-endian bytes of `self`.
    fn put_le(self, out: &mut Vec<u8>);
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! store {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl StoreElement for $t {
            fn put_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
store!(f32, f64, f16, bf16, i8, u8, i16, u16, i32, u32, i64, u64);

impl sealed::Sealed for bool {}
impl StoreElement for bool {
    fn put_le(self, out: &mut Vec<u8>) {
        out.push(u8::from(self));
    }
}

/// The position of a dtype in the reference implementation's `Dtype` enum, whose
/// writer orders tensors by it (descending), then by name: following it makes
/// our files byte-identical to the reference's for the same tensors.
fn reference_rank(d: DType) -> u8 {
    match d {
        DType::Bool => 0,
        DType::U8 => 4,
        DType::I8 => 5,
        DType::F8E5M2 => 6,
        DType::F8E4M3 => 7,
        DType::I16 => 11,
        DType::U16 => 12,
        DType::F16 => 13,
        DType::BF16 => 14,
        DType::I32 => 15,
        DType::U32 => 16,
        DType::F32 => 17,
        DType::F64 => 19,
        DType::I64 => 20,
        DType::U64 => 21,
        // Not in the reference: order by element size among the others.
        _ => (d.size_in_bytes() * 5) as u8,
    }
}

struct Pending<'a> {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    data: Cow<'a, [u8]>,
}

/// Collects tensors and metadata, then writes safetensors files.
///
/// Data may be borrowed (`&'a [u8]`, e.g. from a mapped source) or owned. The
/// header lists `__metadata__` first, then the tensors ordered as the reference
/// implementation orders them (by dtype, widest first, then by name), and is
/// padded with spaces to a multiple of 8 bytes: every tensor is aligned to its
/// element size, and the file is byte-identical to the reference writer's.
///
/// ```
/// use tensorpress_io::safetensors::{SafetensorsModel, SafetensorsWriter};
///
/// let mut w = SafetensorsWriter::new();
/// w.add_metadata("format", "pt")?;
/// let a = ndarray::arr2(&[[1.0f32, 2.0], [3.0, 4.0]]);
/// w.add_array("a", a.view().into_dyn())?;
/// let model = SafetensorsModel::from_bytes(w.to_bytes()?)?;
/// assert_eq!(model.to_f32("a")?, a.into_dyn());
/// assert_eq!(model.metadata()["format"], "pt");
/// # Ok::<(), tensorpress_io::Error>(())
/// ```
#[derive(Default)]
pub struct SafetensorsWriter<'a> {
    tensors: Vec<Pending<'a>>,
    names: HashSet<String>,
    metadata: BTreeMap<String, String>,
    max_shard_size: Option<u64>,
}

impl<'a> SafetensorsWriter<'a> {
    /// An empty writer.
    pub fn new() -> Self {
        SafetensorsWriter::default()
    }

    /// Adds a `__metadata__` entry; [`Error::DuplicateKey`] if it exists.
    pub fn add_metadata(&mut self, key: impl Into<String>, value: impl Into<String>) -> Result<()> {
        let key = key.into();
        if self.metadata.contains_key(&key) {
            return Err(Error::DuplicateKey { key });
        }
        self.metadata.insert(key, value.into());
        Ok(())
    }

    /// Splits [`write_dir`](Self::write_dir) output into shards of at most
    /// `bytes` bytes of tensor data each (a larger tensor gets a shard of its own).
    pub fn max_shard_size(&mut self, bytes: u64) -> &mut Self {
        self.max_shard_size = Some(bytes.max(1));
        self
    }

    /// Adds a tensor from little-endian bytes. Fails on a duplicate or reserved
    /// name and when the byte count disagrees with `dtype` and `shape`.
    pub fn add(
        &mut self,
        name: impl Into<String>,
        dtype: DType,
        shape: &[usize],
        data: impl Into<Cow<'a, [u8]>>,
    ) -> Result<()> {
        let name = name.into();
        let data = data.into();
        if name == METADATA_KEY {
            return Err(Error::ReservedName { name });
        }
        if self.names.contains(&name) {
            return Err(Error::DuplicateTensor { name });
        }
        let expected =
            tensorpress_tensor::byte_len(dtype, shape).map_err(|_| Error::ShapeOverflow {
                tensor: name.clone(),
                dims: shape.iter().map(|&d| d as u64).collect(),
            })?;
        if expected != data.len() {
            return Err(Error::ByteCount {
                tensor: name,
                expected: expected as u64,
                actual: data.len() as u64,
            });
        }
        self.names.insert(name.clone());
        self.tensors.push(Pending {
            name,
            dtype,
            shape: shape.to_vec(),
            data,
        });
        Ok(())
    }

    /// Adds a tensor from a view (e.g. of another checkpoint), borrowing its bytes.
    pub fn add_view(&mut self, name: impl Into<String>, view: &TensorView<'a>) -> Result<()> {
        use tensorpress_tensor::Tensor;
        self.add(name, view.dtype(), view.shape(), view.data())
    }

    /// Adds an ndarray array, stored in its element type.
    pub fn add_array<T: StoreElement>(
        &mut self,
        name: impl Into<String>,
        array: ArrayViewD<'_, T>,
    ) -> Result<()> {
        let mut bytes = Vec::with_capacity(array.len() * T::DTYPE.size_in_bytes());
        for &x in array.iter() {
            x.put_le(&mut bytes);
        }
        self.add(name, T::DTYPE, array.shape(), bytes)
    }

    /// Serializes the tensors at `idx` (a shard) with the metadata into `w`.
    fn emit(&self, idx: &[usize], w: &mut impl Write, path: &Path) -> Result<()> {
        let mut order = idx.to_vec();
        order.sort_by(|&a, &b| {
            let (a, b) = (&self.tensors[a], &self.tensors[b]);
            reference_rank(b.dtype)
                .cmp(&reference_rank(a.dtype))
                .then_with(|| a.name.cmp(&b.name))
        });
        let header = self.header_json(&order)?;
        write_all(w, &(header.len() as u64).to_le_bytes(), path)?;
        write_all(w, &header, path)?;
        for &i in &order {
            write_all(w, &self.tensors[i].data, path)?;
        }
        Ok(())
    }

    fn header_json(&self, order: &[usize]) -> Result<Vec<u8>> {
        let json =
            |s: &str| serde_json::to_string(s).map_err(|source| Error::HeaderJson { source });
        let mut parts = Vec::with_capacity(order.len() + 1);
        if !self.metadata.is_empty() {
            let m = serde_json::to_string(&self.metadata)
                .map_err(|source| Error::HeaderJson { source })?;
            parts.push(format!("{}:{m}", json(METADATA_KEY)?));
        }
        let mut offset = 0usize;
        for &i in order {
            let t = &self.tensors[i];
            let end = offset + t.data.len();
            let shape: Vec<String> = t.shape.iter().map(usize::to_string).collect();
            parts.push(format!(
                "{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
                json(&t.name)?,
                t.dtype.safetensors_name(),
                shape.join(",")
            ));
            offset = end;
        }
        let mut header = format!("{{{}}}", parts.join(",")).into_bytes();
        header.resize(header.len().next_multiple_of(8), b' ');
        if header.len() as u64 > MAX_HEADER_SIZE {
            return Err(Error::HeaderTooLarge {
                size: header.len() as u64,
                max: MAX_HEADER_SIZE,
            });
        }
        Ok(header)
    }

    fn all(&self) -> Vec<usize> {
        (0..self.tensors.len()).collect()
    }

    /// One file in memory, with every tensor (sharding does not apply).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.emit(&self.all(), &mut out, Path::new("<memory>"))?;
        Ok(out)
    }

    /// Writes one file with every tensor to `path`, atomically (a temporary
    /// file in the same folder renamed over `path`). Sharding does not apply.
    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        write_atomic(path, |w| self.emit(&self.all(), w, path))
    }

    /// Groups tensors, in insertion order, into shards of at most the maximum size.
    fn shards(&self) -> Vec<Vec<usize>> {
        let Some(max) = self.max_shard_size else {
            return vec![self.all()];
        };
        let mut shards: Vec<Vec<usize>> = Vec::new();
        let mut current: Vec<usize> = Vec::new();
        let mut size = 0u64;
        for (i, t) in self.tensors.iter().enumerate() {
            let n = t.data.len() as u64;
            if !current.is_empty() && size + n > max {
                shards.push(std::mem::take(&mut current));
                size = 0;
            }
            current.push(i);
            size += n;
        }
        if !current.is_empty() || shards.is_empty() {
            shards.push(current);
        }
        shards
    }

    /// Writes a Hugging Face model folder (created if missing): `model.safetensors`
    /// when everything fits in one shard, else `model-0000i-of-0000n.safetensors`
    /// plus `model.safetensors.index.json`. Every file is written atomically, the
    /// index last. Returns the paths written.
    pub fn write_dir(&self, dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let shards = self.shards();
        if shards.len() == 1 {
            let path = dir.join(SINGLE_FILE);
            self.write_file(&path)?;
            return Ok(vec![path]);
        }
        let n = shards.len();
        let mut written = Vec::with_capacity(n + 1);
        let mut weight_map = BTreeMap::new();
        let mut total_size = 0u64;
        for (k, idx) in shards.iter().enumerate() {
            let file = format!("model-{:05}-of-{n:05}.safetensors", k + 1);
            let path = dir.join(&file);
            write_atomic(&path, |w| self.emit(idx, w, &path))?;
            for &i in idx {
                weight_map.insert(self.tensors[i].name.as_str(), file.clone());
                total_size += self.tensors[i].data.len() as u64;
            }
            written.push(path);
        }
        let index = serde_json::json!({
            "metadata": { "total_size": total_size },
            "weight_map": weight_map,
        });
        let path = dir.join(INDEX_FILE);
        let mut text = serde_json::to_string_pretty(&index).map_err(|source| Error::Json {
            path: path.clone(),
            source,
        })?;
        text.push('\n');
        write_atomic(&path, |w| write_all(w, text.as_bytes(), &path))?;
        written.push(path);
        Ok(written)
    }
}
