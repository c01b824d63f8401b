//! The directory fsyncs redb does not do for us.
//!
//! A redb commit with `Durability::Immediate` ends in `fdatasync` on the database file, which
//! covers the file's data, its size and its block mapping. It does not cover the file's name:
//! a new file, or a rename, lives in the directory, and survives a power cut only once the
//! directory itself is fsynced. The store creates or renames files only when a store is
//! created, when a format-1 (sled) store is migrated, and when the marker file is written, so
//! those are the only places that call these helpers; the hot path (votes, appends) touches
//! no directory.

use std::fs::{self, File};
use std::io;
use std::path::Path;

/// Creates `dir` and its missing ancestors, and fsyncs the parent of each one created, so
/// the new directory's name survives a power cut.
pub(crate) fn create_dir_durably(dir: &Path) -> io::Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .collect();
    fs::create_dir_all(dir)?;
    for created in missing {
        sync_dir(parent_of(created))?;
    }
    Ok(())
}

/// fsyncs the directory `dir`, so the names created, renamed or removed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// fsyncs `dir` and its parent: after a store was created in `dir`, both its files' names and
/// the name of `dir` itself (which may have been created just before) are then durable.
pub(crate) fn sync_dir_and_parent(dir: &Path) -> io::Result<()> {
    sync_dir(dir)?;
    sync_dir(parent_of(dir))
}

/// The parent of `path`, `.` for a relative path with a single component.
fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}
