//! Files that appear whole or not at all: written under a temporary name beside their
//! destination, synced, then renamed into place. The one place the project's files are made,
//! so they all get the same permissions: those of any other Unix tool (`0666` less the process
//! umask, so `0644` under `022`), not the owner-only `0600` of a temporary file.
//!
//! ```
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("config.json");
//! span_marker::atomic::write(&path, b"{}")?;
//! assert_eq!(std::fs::read(&path)?, b"{}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::Write;
use std::path::Path;

use tempfile::NamedTempFile;

use crate::error::{Error, Result};

/// How the temporary names of the files being written start (they end in `.tmp`), so that
/// tools can tell them from finished files.
pub const TEMP_PREFIX: &str = ".span-marker-";

/// A new, empty file under a temporary name in `path`'s directory, with the permissions a
/// finished file should have; removed when dropped unless persisted
/// ([`NamedTempFile::persist`]).
pub fn temp_beside(path: &Path) -> Result<NamedTempFile> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    temp_in(dir, TEMP_PREFIX, ".tmp").map_err(|e| Error::io(dir, e))
}

/// A new, empty file in `dir` named `{prefix}{random}{suffix}`, with the permissions a
/// finished file should have (for layouts that name their own temporary files, such as the
/// Hugging Face cache's `*.incomplete` downloads).
pub fn temp_in(dir: &Path, prefix: &str, suffix: &str) -> std::io::Result<NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix).suffix(suffix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Opened with mode 0666: the kernel applies the umask, as for any created file.
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir)
}

/// Writes `bytes` to `path` atomically: `path` holds either its old content or all of
/// `bytes`, never a part.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut temp = temp_beside(path)?;
    temp.write_all(bytes).map_err(|e| Error::io(path, e))?;
    temp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    temp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// The process umask (set and put back at once: it cannot be read otherwise).
    fn umask() -> u32 {
        // SAFETY: umask only swaps the process's file-creation mask.
        unsafe {
            let mask = libc::umask(0o022);
            libc::umask(mask);
            mask as u32
        }
    }

    #[test]
    fn written_files_have_the_permissions_the_umask_gives_not_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        write(&path, b"{}").unwrap();
        let mode = path.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666 & !umask(), "mode {mode:o}");
        // Nothing is left under a temporary name.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_file_name_without_a_directory_is_written_in_the_current_one() {
        let temp = temp_beside(Path::new("x.json")).unwrap();
        assert_eq!(
            temp.path().parent().unwrap().canonicalize().unwrap(),
            std::env::current_dir().unwrap().canonicalize().unwrap()
        );
    }
}
