//! Finding `adapter_model.safetensors` in what an adapter URL serves: the bare file (what
//! tinker 0.38's per-file external-weights URLs point at) or a tar / tar.gz archive holding it.

use std::io::{self, Read};

use flate2::read::GzDecoder;

use crate::adapter::AdapterError;

const SAFETENSORS_FILE_NAME: &[u8] = b"adapter_model.safetensors";
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const TAR_BLOCK: usize = 512;
/// Largest `adapter_model.safetensors` accepted: rank-32 adapters of multi-billion
/// parameter models are a few hundred MB.
pub(crate) const MAX_SAFETENSORS_BYTES: u64 = 1 << 30;
/// Largest number of (decompressed) archive bytes read, so a gzip bomb cannot keep a
/// request busy for long.
pub(crate) const MAX_ARCHIVE_BYTES: u64 = 2 << 30;

/// The safetensors bytes: `archive` itself when it is a bare safetensors file, else the first
/// regular file named `adapter_model.safetensors` (in any directory) of the tar / tar.gz.
pub(crate) fn extract_safetensors(archive: &[u8]) -> Result<Vec<u8>, AdapterError> {
    if looks_like_bare_safetensors(archive) {
        if archive.len() as u64 > MAX_SAFETENSORS_BYTES {
            return Err(AdapterError::Archive(format!(
                "adapter_model.safetensors is {} bytes, more than the {MAX_SAFETENSORS_BYTES} byte limit",
                archive.len()
            )));
        }
        Ok(archive.to_vec())
    } else if archive.starts_with(&GZIP_MAGIC) {
        find_in_tar(Limited::new(GzDecoder::new(archive)))
    } else if archive.len() < TAR_BLOCK {
        Err(AdapterError::Archive(format!(
            "{} bytes is neither gzip data nor a tar archive (tar headers are {TAR_BLOCK} bytes)",
            archive.len()
        )))
    } else {
        find_in_tar(Limited::new(archive))
    }
}

/// A safetensors file opens with its JSON header's length (u64, little endian) and the header
/// itself (`{`). A tar archive opens with a NUL-padded file name, and gzip with its magic, so
/// neither can pass both checks.
fn looks_like_bare_safetensors(bytes: &[u8]) -> bool {
    if bytes.len() < 10 || bytes[8] != b'{' {
        return false;
    }
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    header_len >= 2 && header_len <= (bytes.len() as u64 - 8)
}

fn find_in_tar<R: Read>(reader: R) -> Result<Vec<u8>, AdapterError> {
    let archive_error = |e: io::Error| AdapterError::Archive(e.to_string());
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(archive_error)? {
        let mut entry = entry.map_err(archive_error)?;
        if !entry.header().entry_type().is_file() || !is_safetensors_path(&entry.path_bytes()) {
            continue;
        }
        let size = entry.size();
        if size > MAX_SAFETENSORS_BYTES {
            return Err(AdapterError::Archive(format!(
                "adapter_model.safetensors is {size} bytes, more than the {MAX_SAFETENSORS_BYTES} byte limit"
            )));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        entry.read_to_end(&mut bytes).map_err(archive_error)?;
        if bytes.len() as u64 != size {
            return Err(AdapterError::Archive(format!("adapter_model.safetensors is truncated: {} of {size} bytes", bytes.len())));
        }
        return Ok(bytes);
    }
    Err(AdapterError::MissingSafetensors)
}

fn is_safetensors_path(path: &[u8]) -> bool {
    path == SAFETENSORS_FILE_NAME || (path.ends_with(SAFETENSORS_FILE_NAME) && path[path.len() - SAFETENSORS_FILE_NAME.len() - 1] == b'/')
}

/// A reader that fails with a clear error after `MAX_ARCHIVE_BYTES`.
struct Limited<R> {
    inner: R,
    remaining: u64,
}

impl<R> Limited<R> {
    fn new(inner: R) -> Self {
        Limited { inner, remaining: MAX_ARCHIVE_BYTES }
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Err(io::Error::other(format!("archive expands to more than {MAX_ARCHIVE_BYTES} bytes")));
        }
        let allowed = buf.len().min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..allowed])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_file_name_in_any_directory() {
        assert!(is_safetensors_path(b"adapter_model.safetensors"));
        assert!(is_safetensors_path(b"./adapter_model.safetensors"));
        assert!(is_safetensors_path(b"run-1/checkpoint/adapter_model.safetensors"));
        assert!(!is_safetensors_path(b"not_adapter_model.safetensors"));
        assert!(!is_safetensors_path(b"adapter_model.safetensors.bak"));
    }

    #[test]
    fn rejects_non_archives() {
        assert!(matches!(extract_safetensors(b""), Err(AdapterError::Archive(_))));
        assert!(matches!(extract_safetensors(b"hello"), Err(AdapterError::Archive(_))));
        assert!(matches!(extract_safetensors(&[0x1f, 0x8b, 1, 2, 3]), Err(AdapterError::Archive(_))));
        assert!(matches!(extract_safetensors(&[b'x'; 2048]), Err(AdapterError::Archive(_))));
        // An empty tar (two zero blocks) is readable but has no adapter.
        assert_eq!(extract_safetensors(&[0; 1024]), Err(AdapterError::MissingSafetensors));
    }

    #[test]
    fn a_bare_safetensors_file_is_taken_as_is() {
        let file = crate::make_test_safetensors(4, 7);
        assert_eq!(extract_safetensors(&file).unwrap(), file);
        // The same file inside an archive, plain or gzipped, yields the same bytes.
        for gzip in [false, true] {
            let archive = crate::make_test_archive(4, 7, "base", gzip);
            assert!(!looks_like_bare_safetensors(&archive));
            assert_eq!(extract_safetensors(&archive).unwrap(), file);
        }
    }

    #[test]
    fn a_header_length_beyond_the_file_is_not_safetensors() {
        let mut bytes = vec![0u8; 64];
        bytes[..8].copy_from_slice(&1000u64.to_le_bytes());
        bytes[8] = b'{';
        assert!(!looks_like_bare_safetensors(&bytes));
        assert!(extract_safetensors(&bytes).is_err());
    }
}
