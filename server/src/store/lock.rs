//! The lock file that keeps a second server out of a data directory.
//!
//! Two servers writing one database would each believe its own accounts
//! and bans, so the second is refused at start. `flock(2)` on
//! `<dir>/lock` does it: the kernel releases the lock when the process
//! ends, however it ends (kill -9 included), so a stale lock never needs
//! cleaning up by hand. The holder writes its pid in the file, for the
//! refusal's message.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use super::StoreError;

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "lock";

/// The data directory, held: the lock lasts as long as this value (or the
/// process).
pub(super) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock on `dir`, or says who holds it.
    pub(super) fn take(dir: &Path) -> Result<DirLock, StoreError> {
        let path = dir.join(LOCK_FILE);
        let io = |doing| {
            let path = path.clone();
            move |source| StoreError::Io {
                doing,
                path,
                source,
            }
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("open"))?;
        // SAFETY: flock on a descriptor this function owns and keeps open.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::WouldBlock {
                return Err(io("lock")(error));
            }
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(StoreError::InUse {
                dir: dir.to_path_buf(),
                pid: pid.trim().parse().ok(),
            });
        }
        file.set_len(0).map_err(io("write"))?;
        file.rewind().map_err(io("write"))?;
        writeln!(file, "{}", std::process::id()).map_err(io("write"))?;
        Ok(DirLock { _file: file })
    }
}
