//! Small filesystem helpers shared by the key file and the lock file:
//! creating a file exclusively so that other processes only ever see it
//! whole, and fsyncing directories so a new entry survives a crash.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Creates `path` holding `bytes`, failing with
/// [`io::ErrorKind::AlreadyExists`] when it exists.
///
/// The bytes are written and fsynced to a private temporary file first, which
/// is then hard-linked to `path`; `link(2)` never replaces an existing entry,
/// so of several racing processes exactly one wins, and a reader never sees
/// the file empty or half-written. Where the filesystem cannot hard-link, this
/// falls back to `O_CREAT | O_EXCL` on `path` itself.
pub(crate) fn create_exclusive(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        hex::encode(rand::random::<[u8; 8]>())
    ));
    write_new(&tmp, bytes, mode)?;
    let linked = fs::hard_link(&tmp, path);
    // The temporary name is ours alone; losing it changes nothing.
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
        // No hard links here (some network and FUSE filesystems): fall back
        // to an exclusive create of the file itself.
        Err(_) => write_new(path, bytes, mode)?,
    }
    sync_dir(dir);
    Ok(())
}

/// Creates `path` with `O_EXCL`, writes `bytes` and fsyncs it.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if written.is_err() {
        let _ = fs::remove_file(path);
    }
    written
}

/// Fsyncs a directory so that entries created or removed in it are durable.
/// Best effort: not every platform lets a directory be opened for this.
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
