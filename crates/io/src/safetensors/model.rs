//! [`SafetensorsModel`]: one or more mapped safetensors files behind one name space.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use ndarray::ArrayD;
use tensorpress_tensor::{Tensor, TensorView};

use super::header::{self, Header, StringPairs, TensorInfo};
use crate::error::IndexProblem;
use crate::fs::Storage;
use crate::{Error, Result};

/// The single-file checkpoint name in a Hugging Face model folder.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The shard index name in a Hugging Face model folder.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

#[derive(Debug)]
struct Shard {
    path: Option<PathBuf>,
    storage: Storage,
    data_start: usize,
}

#[derive(Debug)]
struct Entry {
    shard: usize,
    info: TensorInfo,
    /// Absolute byte range in the shard.
    start: usize,
    end: usize,
}

/// A safetensors checkpoint: a single file or a sharded Hugging Face folder.
///
/// Opening maps every file and validates every header; tensor bytes are only
/// touched when asked for ([`view`](Self::view), [`to_f32`](Self::to_f32)).
/// The files must not be modified while the model is alive.
#[derive(Debug)]
pub struct SafetensorsModel {
    shards: Vec<Shard>,
    tensors: BTreeMap<String, Entry>,
    metadata: BTreeMap<String, String>,
}

/// `{"weight_map": {...}}` of an index file; other fields are ignored.
#[derive(serde::Deserialize)]
struct Index {
    weight_map: StringPairs,
}

impl SafetensorsModel {
    /// Opens `path`: a `.safetensors` file, a `model.safetensors.index.json`
    /// file, or a folder holding `model.safetensors` or
    /// `model.safetensors.index.json` (checked in that order).
    ///
    /// Content errors come wrapped in [`Error::InFile`]; see [`Error::root`].
    pub fn open(path: impl AsRef<Path>) -> Result<SafetensorsModel> {
        let path = path.as_ref();
        if path.is_dir() {
            let single = path.join(SINGLE_FILE);
            if single.is_file() {
                return Self::open_file(&single);
            }
            let index = path.join(INDEX_FILE);
            if index.is_file() {
                return Self::open_index(&index);
            }
            return Err(Error::NoCheckpoint {
                path: path.to_owned(),
            });
        }
        let is_index = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".index.json"));
        if is_index {
            Self::open_index(path)
        } else {
            Self::open_file(path)
        }
    }

    fn open_file(path: &Path) -> Result<SafetensorsModel> {
        let storage = Storage::map(path)?;
        let header = header::parse(&storage).map_err(|e| e.in_file(path))?;
        Ok(Self::from_shards(vec![(
            Some(path.to_owned()),
            storage,
            header,
        )]))
    }

    /// Parses one safetensors file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<SafetensorsModel> {
        let header = header::parse(&bytes)?;
        Ok(Self::from_shards(vec![(
            None,
            Storage::Owned(bytes),
            header,
        )]))
    }

    fn from_shards(shards: Vec<(Option<PathBuf>, Storage, Header)>) -> SafetensorsModel {
        let mut model = SafetensorsModel {
            shards: Vec::with_capacity(shards.len()),
            tensors: BTreeMap::new(),
            metadata: BTreeMap::new(),
        };
        for (i, (path, storage, header)) in shards.into_iter().enumerate() {
            for (name, e) in header.tensors {
                model.tensors.insert(
                    name,
                    Entry {
                        shard: i,
                        info: e.info,
                        start: header.data_start + e.start,
                        end: header.data_start + e.end,
                    },
                );
            }
            for (k, v) in header.metadata {
                model.metadata.entry(k).or_insert(v);
            }
            model.shards.push(Shard {
                path,
                storage,
                data_start: header.data_start,
            });
        }
        model
    }

    fn open_index(index_path: &Path) -> Result<SafetensorsModel> {
        let text = std::fs::read(index_path).map_err(|e| Error::io(index_path, e))?;
        let index: Index = serde_json::from_slice(&text).map_err(|source| Error::Json {
            path: index_path.to_owned(),
            source,
        })?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let in_index = |e: Error| e.in_file(index_path);

        // weight_map: tensor -> shard file, each tensor once, plain file names only.
        let mut weight_map: HashMap<String, String> = HashMap::new();
        let mut files: Vec<String> = Vec::new();
        for (tensor, file) in index.weight_map.0 {
            if !is_plain_file_name(&file) {
                return Err(in_index(Error::BadShardName { name: file }));
            }
            if weight_map.contains_key(&tensor) {
                return Err(in_index(Error::DuplicateTensor { name: tensor }));
            }
            if !files.contains(&file) {
                files.push(file.clone());
            }
            weight_map.insert(tensor, file);
        }
        files.sort();

        let mut shards = Vec::with_capacity(files.len());
        for file in &files {
            let path = dir.join(file);
            let storage = Storage::map(&path)?;
            let header = header::parse(&storage).map_err(|e| e.in_file(&path))?;
            for name in header.tensors.keys() {
                if weight_map.get(name) != Some(file) {
                    return Err(in_index(Error::IndexMismatch {
                        tensor: name.clone(),
                        problem: IndexProblem::NotInIndex {
                            shard: file.clone(),
                        },
                    }));
                }
            }
            shards.push((Some(path), storage, header));
        }
        for (tensor, file) in &weight_map {
            let i = files.binary_search(file).unwrap_or(usize::MAX);
            let present = shards
                .get(i)
                .is_some_and(|(_, _, h)| h.tensors.contains_key(tensor));
            if !present {
                return Err(in_index(Error::IndexMismatch {
                    tensor: tensor.clone(),
                    problem: IndexProblem::MissingFromShard {
                        shard: file.clone(),
                    },
                }));
            }
        }
        Ok(Self::from_shards(shards))
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.tensors.keys().map(String::as_str).collect()
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Whether a tensor named `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The dtype and shape of a tensor.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name).map(|e| &e.info)
    }

    /// The files this model was read from (empty for [`from_bytes`](Self::from_bytes)).
    pub fn files(&self) -> Vec<&Path> {
        self.shards
            .iter()
            .filter_map(|s| s.path.as_deref())
            .collect()
    }

    /// The file holding a tensor.
    pub fn file_of(&self, name: &str) -> Option<&Path> {
        let e = self.tensors.get(name)?;
        self.shards[e.shard].path.as_deref()
    }

    /// The `__metadata__` strings; for sharded checkpoints the union over shards
    /// (the first shard, by file name, wins on conflicts).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// A borrowed view of a tensor's bytes with its dtype and shape.
    pub fn view(&self, name: &str) -> Result<TensorView<'_>> {
        let e = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::TensorNotFound {
                name: name.to_owned(),
            })?;
        let shard = &self.shards[e.shard];
        debug_assert!(e.start >= shard.data_start);
        // In range: validated when the header was parsed.
        let bytes = &shard.storage[e.start..e.end];
        Ok(TensorView::new(e.info.dtype, &e.info.shape, bytes)?)
    }

    /// A tensor converted to f32 (exact for every float type up to f32).
    pub fn to_f32(&self, name: &str) -> Result<ArrayD<f32>> {
        Ok(self.view(name)?.to_f32()?)
    }
}

/// Whether `name` is a bare file name (no separators, not `.` or `..`).
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && Path::new(name).file_name().and_then(|n| n.to_str()) == Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_must_be_plain() {
        assert!(is_plain_file_name("model-00001-of-00002.safetensors"));
        for bad in [
            "",
            ".",
            "..",
            "../x.safetensors",
            "a/b",
            "a\\b",
            "/etc/passwd",
        ] {
            assert!(!is_plain_file_name(bad), "{bad}");
        }
    }
}
