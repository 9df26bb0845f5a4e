//! File plumbing shared by the formats: read-only maps and atomic writes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Deref;
use std::path::Path;

use memmap2::Mmap;

use crate::{Error, Result};

/// The bytes of a checkpoint: a read-only memory map or an owned buffer.
#[derive(Debug)]
pub(crate) enum Storage {
    /// A mapped file.
    Mapped(Mmap),
    /// Bytes handed over by the caller.
    Owned(Vec<u8>),
}

impl Storage {
    /// Maps `path` read-only.
    pub(crate) fn map(path: &Path) -> Result<Storage> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only and private to this process. Like every
        // mmap-based reader (safetensors, llama.cpp), we rely on the file not
        // being truncated or modified while mapped; doing so is outside the
        // contract of this crate's readers and is documented on `open`.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Ok(Storage::Mapped(map))
    }
}

impl Deref for Storage {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// Writes `path` atomically: `write` fills a temporary file in the same folder,
/// which is flushed, synced and renamed over `path` only if `write` succeeds.
/// Readers never observe a partial file, and a failed write leaves the old file.
pub(crate) fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&File>) -> Result<()>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
        write(&mut w)?;
        w.flush().map_err(|e| Error::io(path, e))?;
    }
    // NamedTempFile creates files readable by the owner only; checkpoints are
    // ordinary files (0644 before the umask, as `File::create` gives).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = 0o666 & !current_umask();
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(path, e))?;
    }
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Writes `bytes` to `path` atomically (temporary file in the same folder,
/// synced, then renamed): readers never see a partial file.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |w| write_all(w, bytes, path))
}

/// The process umask, read without changing it where the OS allows
/// (`/proc/self/status` on Linux); 0o022 otherwise.
#[cfg(unix)]
fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// Maps a write error to [`Error::Io`] with `path`.
pub(crate) fn write_all(w: &mut impl Write, bytes: &[u8], path: &Path) -> Result<()> {
    w.write_all(bytes).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_only_on_success() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        write_atomic(&path, |w| write_all(w, b"first", &path)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        let failed = write_atomic(&path, |w| {
            write_all(w, b"partial", &path)?;
            Err(Error::TensorNotFound { name: "x".into() })
        });
        assert!(matches!(failed, Err(Error::TensorNotFound { .. })));
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o644, 0o644 & !current_umask());
        }
    }
}
