//! Content fingerprints: what resumable jobs record of their inputs, so that a resumed job can
//! tell that it continues with the same data, model and settings, whatever their names, and
//! refuse to continue with anything else.
//!
//! Every resumable job (training's [`RunIdentity`](crate::train::trainer::RunIdentity), the
//! engine's local and cluster annotation) records its identity as JSON, compares it with
//! [`differences`] and records floats [`as_recorded`], so that they are refused and explained
//! the same way.
//!
//! ```
//! use span_marker::fingerprint::Fingerprint;
//! let a = Fingerprint::new().str("Peter").str("Blackburn").finish();
//! let b = Fingerprint::new().str("PeterBlackburn").finish();
//! assert_ne!(a, b); // every piece is length-prefixed
//! assert_eq!(a.len(), 64);
//! ```

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
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

/// What changed between the identity a job recorded (`found`) and this run's (`wanted`), key
/// by key, as "`key` was X, is now Y" (in `wanted`'s key order). `notes` give a key's change a
/// sentence for people, put before it: `("model", "the model's weights changed: ")`.
///
/// A key that `found` lacks (recorded by an older version, before the key existed) cannot be
/// compared and is left out. Values that do not serialize to JSON objects have no keys, and so
/// no differences.
///
/// ```
/// use span_marker::fingerprint::differences;
/// use serde_json::json;
/// let found = json!({"model": "abc", "threshold": null});
/// let wanted = json!({"model": "abd", "threshold": 0.9, "added": 1});
/// assert_eq!(
///     differences(&found, &wanted, &[("model", "the weights changed: ")]),
///     [
///         "the weights changed: `model` was \"abc\", is now \"abd\"",
///         "`threshold` was null, is now 0.9",
///     ]
/// );
/// ```
pub fn differences<T: Serialize + ?Sized>(
    found: &T,
    wanted: &T,
    notes: &[(&str, &str)],
) -> Vec<String> {
    let as_map = |record: &T| match serde_json::to_value(record) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let (found, wanted) = (as_map(found), as_map(wanted));
    wanted
        .iter()
        .filter_map(|(key, now)| {
            let before = found.get(key).filter(|before| *before != now)?;
            let note = notes
                .iter()
                .find_map(|(noted, note)| (noted == key).then_some(*note))
                .unwrap_or_default();
            Some(format!("{note}`{key}` was {before}, is now {now}"))
        })
        .collect()
}

/// `value` as a job's JSON record reads it back: written out as JSON text and parsed again,
/// so that what a run computes compares equal to what an earlier run recorded (float32's
/// `0.9` becomes `0.9`, not `0.8999999761581421`, and a float64 is the one its text parses
/// to).
///
/// ```
/// use span_marker::fingerprint::as_recorded;
/// let threshold: Option<f64> = as_recorded(&Some(0.9_f32)).unwrap();
/// assert_eq!(threshold, Some(0.9));
/// ```
pub fn as_recorded<T: Serialize + ?Sized, U: DeserializeOwned>(value: &T) -> serde_json::Result<U> {
    serde_json::from_str(&serde_json::to_string(value)?)
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

    #[test]
    fn differences_name_each_changed_key_and_skip_keys_never_recorded() {
        let found = serde_json::json!({"input": {"bytes": 3}, "seed": 1, "same": true});
        let wanted = serde_json::json!({"input": {"bytes": 4}, "seed": 2, "same": true, "new": 0});
        let notes = [("input", "the input changed: ")];
        assert_eq!(
            differences(&found, &wanted, &notes),
            [
                "the input changed: `input` was {\"bytes\":3}, is now {\"bytes\":4}",
                "`seed` was 1, is now 2",
            ]
        );
        assert!(differences(&found, &found, &notes).is_empty());
    }

    #[test]
    fn a_recorded_float_compares_equal_to_its_stored_self() {
        for value in [0.1_f32, 0.7, 0.9, 1.0, 1e-7] {
            let recorded: f64 = as_recorded(&value).unwrap();
            let stored: f64 = as_recorded(&recorded).unwrap();
            assert_eq!(recorded, stored);
            assert_eq!(recorded, value.to_string().parse::<f64>().unwrap());
        }
    }
}
