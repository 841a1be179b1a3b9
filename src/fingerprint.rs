//! Content fingerprints: what resumable jobs record of their inputs, so that a resumed job can
//! tell that it continues with the same data, model and settings, whatever their names, and
//! refuse to continue with anything else.
//!
//! ```
//! use span_marker::fingerprint::Fingerprint;
//! let a = Fingerprint::new().str("Peter").str("Blackburn").finish();
//! let b = Fingerprint::new().str("PeterBlackburn").finish();
//! assert_ne!(a, b); // every piece is length-prefixed
//! assert_eq!(a.len(), 64);
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A SHA-256 over length-prefixed pieces, written out as 64 hex digits.
#[derive(Debug, Clone, Default)]
pub struct Fingerprint(Sha256);

impl Fingerprint {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one piece of bytes.
    pub fn bytes(mut self, bytes: &[u8]) -> Self {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    /// Adds one piece of text.
    pub fn str(self, text: &str) -> Self {
        self.bytes(text.as_bytes())
    }

    /// Adds a number.
    pub fn u64(mut self, value: u64) -> Self {
        self.0.update(value.to_le_bytes());
        self
    }

    /// The digest, as 64 lower-case hex digits.
    pub fn finish(self) -> String {
        hex(&self.0.finalize())
    }
}

/// What identifies a file by its content: its size and the SHA-256 of all its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    pub bytes: u64,
    pub sha256: String,
}

impl FileIdentity {
    /// Reads the whole file, streaming.
    pub fn of(path: &Path) -> Result<Self> {
        let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut hasher = Sha256::new();
        let bytes = std::io::copy(&mut file, &mut hasher).map_err(|e| Error::io(path, e))?;
        Ok(Self {
            bytes,
            sha256: hex(&hasher.finalize()),
        })
    }
}

/// Bytes as lower-case hex digits.
pub(crate) fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_known_by_its_bytes_not_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"abc").unwrap();
        std::fs::write(&b, b"abc").unwrap();
        let id = FileIdentity::of(&a).unwrap();
        assert_eq!(id, FileIdentity::of(&b).unwrap());
        assert_eq!(id.bytes, 3);
        // sha256("abc")
        assert_eq!(
            id.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        std::fs::write(&b, b"abd").unwrap();
        assert_ne!(id, FileIdentity::of(&b).unwrap());
        let missing = FileIdentity::of(&dir.path().join("c"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("/c"), "{missing}");
    }
}
