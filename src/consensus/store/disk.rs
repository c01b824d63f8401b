//! Makes sled's flush survive power loss: after `sled::Db::flush`, fsync the files that hold
//! the data, on descriptors the store keeps open.
//!
//! # The gap in sled 0.34.7
//!
//! `Tree::flush` is documented as "flushes all dirty IO buffers and calls fsync", but on Linux
//! its write path (`src/pagecache/iobuf.rs`, `IoBufs::write_to_log`) does `pwrite` and then
//! `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)` on the `db` file; it calls `fsync` only
//! when `sync_file_range` is missing (`ENOSYS`) or on other systems. `sync_file_range` waits
//! until the pages reach the device, but:
//!
//! - it does not flush the device's volatile write cache, so the drive may still lose them;
//! - it does not commit file metadata: when a write grows the `db` file or fills a hole, the
//!   new size and block mapping sit in the filesystem journal, uncommitted, and after a power
//!   cut the written blocks are not part of the file at all.
//!
//! sled's background flusher calls `sync_all` on the `db` file every `flush_every_ms` (500 ms
//! by default), so a power cut could lose up to half a second of acknowledged votes and
//! entries. Other files are worse off:
//!
//! - `blobs/<lsn>`: pages too big to inline (over about 128 KiB with the default 512 KiB
//!   segments) are written to their own file (`src/pagecache/blob_io.rs`, `write_blob`) with
//!   plain `write_all`: no fsync of the file, nor of the `blobs` directory that names it.
//! - `snap.<lsn>`: sled's page-table snapshot is fsynced and then renamed into place
//!   (`src/pagecache/snapshot.rs`, `write_snapshot`), but the directory is not fsynced, so the
//!   rename (and the removal of the older snapshot) may not survive.
//! - `conf` is written once at creation without fsync, and the directories sled creates
//!   (`<dir>`, `<dir>/blobs`) are never fsynced either.
//!
//! # The fix
//!
//! [`DiskSync`] opens the `db` file, the data directory and `blobs/` once, right after sled
//! opened them, and keeps those descriptors. Keeping them matters: since Linux 4.13 a
//! writeback error is reported to every descriptor that was open when it happened, so an I/O
//! error that sled's own `sync_file_range` saw is still reported to our `fsync`.
//!
//! At open it fsyncs everything once: `conf`, `db`, every blob, `blobs/`, the data directory
//! and its parent (which names the data directory if it was just created). After every
//! `Db::flush` it then, in this order:
//!
//! 1. fsyncs every blob file that is new or has grown since the last sync, then `blobs/` if
//!    its listing changed (the data before the pointers to it);
//! 2. `fdatasync`s the `db` file: device cache flush plus the size and block mapping;
//! 3. fsyncs the data directory if its listing changed (a new `snap.*` rename).
//!
//! Listing a directory costs a few microseconds; fsyncing an unchanged one costs a device
//! cache flush, so directories are only fsynced when their names changed. All writes to
//! sled go through the store's writer lock, so no write of ours races a listing.
//!
//! What stays outside this fix: sled's garbage collector moves live pages out of old segments
//! on its own thread and later reuses those segments. It judges the moved copies safe by its
//! own `sync_file_range`, so a power cut between such a move and our next fsync could in
//! principle lose moved pages. That is inside sled and is why the durable-write tests here
//! stop at `kill -9`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::StoreError;

/// The open descriptors and what was last made durable, for the fsyncs after sled's flush.
pub(crate) struct DiskSync {
    dir: PathBuf,
    dir_handle: File,
    db_file: File,
    blobs_dir: File,
    /// Names in the data directory when it was last fsynced.
    dir_names: BTreeMap<OsString, u64>,
    /// Blob files and their lengths when they were last fsynced.
    blob_lengths: BTreeMap<OsString, u64>,
    /// The first failure of a durable write; once set, the store takes no more writes.
    broken: Option<String>,
}

impl DiskSync {
    /// Opens the descriptors of the sled files in `dir` (sled must have opened it already)
    /// and fsyncs all of them once.
    pub(crate) fn open(dir: &Path) -> Result<DiskSync, StoreError> {
        let open = |path: PathBuf| {
            File::open(&path).map_err(|source| StoreError::Unreadable { path, source })
        };
        let mut disk = DiskSync {
            dir: dir.to_path_buf(),
            dir_handle: open(dir.to_path_buf())?,
            db_file: open(dir.join("db"))?,
            blobs_dir: open(dir.join("blobs"))?,
            dir_names: BTreeMap::new(),
            blob_lengths: BTreeMap::new(),
            broken: None,
        };
        disk.sync_everything().map_err(|source| StoreError::Io {
            dir: dir.to_path_buf(),
            action: "syncing sled's files at open".into(),
            source,
        })?;
        Ok(disk)
    }

    /// Fails if an earlier durable write failed.
    pub(crate) fn check_usable(&self) -> Result<(), StoreError> {
        match &self.broken {
            None => Ok(()),
            Some(first) => Err(StoreError::Broken {
                dir: self.dir.clone(),
                first: first.clone(),
            }),
        }
    }

    /// Flushes sled, then fsyncs what the flush wrote. On failure the store refuses every
    /// later write (see the module doc of the store).
    pub(crate) fn sync(&mut self, db: &sled::Db) -> Result<(), StoreError> {
        self.check_usable()?;
        let result = match db.flush() {
            Err(source) => Err(StoreError::SledIo {
                dir: self.dir.clone(),
                action: "flushing".into(),
                source,
            }),
            Ok(_) => self.sync_after_flush().map_err(|source| StoreError::Io {
                dir: self.dir.clone(),
                action: "fsyncing after sled's flush".into(),
                source,
            }),
        };
        if let Err(e) = &result {
            tracing::error!(dir = %self.dir.display(), error = %e, "durable write failed; the store refuses further writes");
            self.broken = Some(e.to_string());
        }
        result
    }

    fn sync_everything(&mut self) -> io::Result<()> {
        // With nothing recorded as synced, every file counts as new: conf, db, snap.*, blobs.
        self.blob_lengths.clear();
        self.dir_names.clear();
        self.sync_after_flush()?;
        self.blobs_dir.sync_all()?;
        self.dir_handle.sync_all()?;
        // The parent names the data directory; it matters when the directory was just made.
        if let Some(parent) = self.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)?.sync_all()?;
        }
        Ok(())
    }

    fn sync_after_flush(&mut self) -> io::Result<()> {
        let blobs = listing(&self.dir.join("blobs"))?;
        if sync_changed_files(&self.dir.join("blobs"), &self.blob_lengths, &blobs, true)? {
            self.blobs_dir.sync_all()?;
        }
        self.blob_lengths = blobs;

        self.db_file.sync_data()?;

        let names = listing(&self.dir)?;
        // `db` grows all the time and is synced above: here only new names count.
        if sync_changed_files(&self.dir, &self.dir_names, &names, false)? {
            self.dir_handle.sync_all()?;
        }
        self.dir_names = names;
        Ok(())
    }
}

/// The entries in `dir` with their lengths (0 for anything but a regular file).
fn listing(dir: &Path) -> io::Result<BTreeMap<OsString, u64>> {
    let mut names = BTreeMap::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let len = match entry.metadata() {
            Ok(m) if m.is_file() => m.len(),
            Ok(_) => 0,
            // Removed between the listing and the stat: sled deleted it, nothing to sync.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        names.insert(entry.file_name(), len);
    }
    Ok(names)
}

/// fsyncs every regular file in `now` that is new since `before` or, with `by_length`, whose
/// length changed. Returns whether the set of names changed, i.e. whether the directory
/// itself needs an fsync.
fn sync_changed_files(
    dir: &Path,
    before: &BTreeMap<OsString, u64>,
    now: &BTreeMap<OsString, u64>,
    by_length: bool,
) -> io::Result<bool> {
    for (name, len) in now {
        let unchanged = match before.get(name) {
            None => false,
            Some(old) => !by_length || old == len,
        };
        if unchanged {
            continue;
        }
        match File::open(dir.join(name)) {
            Ok(file) if file.metadata()?.is_file() => file.sync_data()?,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(before.len() != now.len() || before.keys().ne(now.keys()))
}
