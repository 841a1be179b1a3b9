//! One run at a time per output: a lock file, held (with an OS file lock, released when the
//! process ends however it ends) while a job writes into a directory.

use std::fs::File;
use std::path::Path;

use crate::error::{Error, Result};

/// A held lock on a directory; released when dropped or when the process ends. The lock file
/// stays: deleting it would let a run that opened it just before lock a file that a third run
/// no longer sees.
///
/// ```
/// use span_marker::lock::DirLock;
/// let dir = tempfile::tempdir()?;
/// let run = dir.path().join("run");
/// let held = DirLock::create(&run, "training")?; // creates `run`
/// let refused = DirLock::acquire(&run, "training").unwrap_err().to_string();
/// assert!(refused.contains("another training run"), "{refused}");
/// drop(held);
/// DirLock::acquire(&run, "training")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// The lock file's name inside the locked directory.
    pub const FILE: &str = ".span-marker.lock";

    /// Creates `dir` (and its parents) when missing, then [`acquire`](Self::acquire)s it.
    pub fn create(dir: &Path, job: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Self::acquire(dir, job)
    }

    /// Locks `dir` (which must exist) for a run of `job`, or says that another run holds it.
    pub fn acquire(dir: &Path, job: &str) -> Result<Self> {
        let path = dir.join(Self::FILE);
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::io(
                dir,
                std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!(
                        "another {job} run is writing here (it holds {}); wait for it to end",
                        path.display()
                    ),
                ),
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
        }
    }
}
