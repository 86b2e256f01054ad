//! Finding `adapter_model.safetensors` inside an uploaded tar or tar.gz archive.

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

/// The bytes of the first regular file named `adapter_model.safetensors` (in any directory).
pub(crate) fn extract_safetensors(archive: &[u8]) -> Result<Vec<u8>, AdapterError> {
    if archive.starts_with(&GZIP_MAGIC) {
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
            return Err(AdapterError::Archive(format!(
                "adapter_model.safetensors is truncated: {} of {size} bytes",
                bytes.len()
            )));
        }
        return Ok(bytes);
    }
    Err(AdapterError::MissingSafetensors)
}

fn is_safetensors_path(path: &[u8]) -> bool {
    path == SAFETENSORS_FILE_NAME
        || (path.ends_with(SAFETENSORS_FILE_NAME) && path[path.len() - SAFETENSORS_FILE_NAME.len() - 1] == b'/')
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
}
