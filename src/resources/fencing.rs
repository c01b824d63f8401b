//! The fencing-token gate: a resource group acts only for the newest owner epoch it has seen.
//!
//! Ownership moves with a strictly increasing epoch. A request carrying an older epoch comes from
//! a past owner term (a delayed message, a retried RPC, a stale decision) and must not touch the
//! resources, even after this process restarts. So the highest epoch acted on is written to a
//! small file in the state directory *before* the action runs: written to a temporary file,
//! synced, renamed over the old one, and the directory synced, so a crash leaves either the old
//! or the new value and never a torn one. An epoch equal to the last one is allowed, so a retry
//! of the same owner term goes through.
//!
//! A fence is never refused: it only takes things down, so a stale or zero
//! epoch cannot make it start anything, and a fence refused because the store is full, read-only
//! or wiped would leave a node that lost its lease holding the group. A fence therefore goes
//! through [`EpochGate::note_fence`], which records the epoch best-effort and cannot fail the
//! fence; only [`EpochGate::admit`] (start, stop, restart) still refuses. The gate keeps two
//! marks for that: the highest epoch seen (in memory, raised by fences too, so a stale start
//! stays refused in this process) and the highest epoch written durably, so an epoch a fence saw
//! but could not write is still written by the next start under it before that start runs.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Why the gate did not let an action through.
#[derive(Debug, thiserror::Error)]
pub enum EpochError {
    /// The action's epoch is older than one already acted on; the request is stale: drop it.
    #[error("epoch {epoch} is older than epoch {last} already acted on; the request is stale and was refused")]
    Stale {
        /// The refused action's epoch.
        epoch: u64,
        /// The highest epoch already acted on.
        last: u64,
    },
    /// The epoch file could not be read or written; fix the state directory before acting.
    #[error("epoch file {path}: {message}; fix the state directory, no action was run")]
    Store {
        /// The epoch file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// The highest epoch a group has acted on, kept in memory and in a file.
#[derive(Debug)]
pub struct EpochGate {
    path: PathBuf,
    marks: std::sync::Mutex<Marks>,
}

/// The gate's two marks; `durable <= last` always.
#[derive(Debug, Clone, Copy)]
struct Marks {
    /// The highest epoch acted on, fences included; actions below it are refused.
    last: u64,
    /// The highest epoch known to be in the file.
    durable: u64,
}

impl EpochGate {
    /// Opens (or starts) the gate kept in `<state_dir>/<name>.epoch`.
    pub fn open(state_dir: &Path, name: &str) -> Result<Self, EpochError> {
        let path = state_dir.join(format!("{name}.epoch"));
        let store = |message: String| EpochError::Store {
            path: path.clone(),
            message,
        };
        if !state_dir.is_dir() {
            return Err(store(format!(
                "state directory {} does not exist",
                state_dir.display()
            )));
        }
        let last = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<u64>()
                .map_err(|e| store(format!("holds {:?}, not an epoch: {e}", text.trim())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(store(e.to_string())),
        };
        Ok(EpochGate {
            path,
            marks: std::sync::Mutex::new(Marks {
                last,
                durable: last,
            }),
        })
    }

    fn marks(&self) -> std::sync::MutexGuard<'_, Marks> {
        self.marks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The highest epoch acted on so far (0 before any), fences included.
    pub fn last(&self) -> u64 {
        self.marks().last
    }

    /// The file the epoch is kept in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lets `epoch` through if it is not older than the last one, recording it durably first.
    /// For start, stop and restart; a fence goes through [`EpochGate::note_fence`] instead.
    pub fn admit(&self, epoch: u64) -> Result<(), EpochError> {
        let mut marks = self.marks();
        if epoch < marks.last {
            return Err(EpochError::Stale {
                epoch,
                last: marks.last,
            });
        }
        // `epoch >= last >= durable`: only an epoch the file does not hold yet needs a write,
        // including one a fence saw but could not write.
        if epoch > marks.durable {
            self.persist(epoch).map_err(|e| EpochError::Store {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
            marks.durable = epoch;
        }
        marks.last = epoch;
        Ok(())
    }

    /// Notes that a fence ran under `epoch`; never refuses. An epoch above the last one raises
    /// the in-memory mark at once (so older starts stay refused in this process) and is then
    /// written to the file; a failed write is returned for the caller to log and changes
    /// nothing else. An epoch at or below the last one (a stale request, a wiped store's 0)
    /// changes nothing: the mark never goes down.
    pub fn note_fence(&self, epoch: u64) -> std::io::Result<()> {
        let mut marks = self.marks();
        marks.last = marks.last.max(epoch);
        if epoch <= marks.durable {
            return Ok(());
        }
        self.persist(epoch)?;
        marks.durable = epoch;
        Ok(())
    }

    fn persist(&self, epoch: u64) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = self.path.with_extension("epoch.tmp");
        {
            let mut file = std::fs::File::create(&tmp)?;
            writeln!(file, "{epoch}")?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        std::fs::File::open(dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_epochs_are_refused_equal_ones_pass_and_the_mark_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let gate = EpochGate::open(dir.path(), "group").unwrap();
        assert_eq!(gate.last(), 0);
        gate.admit(7).unwrap();
        gate.admit(7).unwrap();
        match gate.admit(6) {
            Err(EpochError::Stale { epoch: 6, last: 7 }) => {}
            other => panic!("expected a stale refusal, got {other:?}"),
        }
        drop(gate);
        let reopened = EpochGate::open(dir.path(), "group").unwrap();
        assert_eq!(reopened.last(), 7);
        assert!(reopened.admit(6).is_err());
        reopened.admit(9).unwrap();
        let text = std::fs::read_to_string(reopened.path()).unwrap();
        assert_eq!(text.trim(), "9");
    }

    #[test]
    fn a_fence_is_noted_without_refusal_and_a_start_writes_what_it_could_not() {
        let dir = tempfile::tempdir().unwrap();
        let gate = EpochGate::open(dir.path(), "group").unwrap();
        gate.admit(5).unwrap();
        // Older epochs and 0 (a wiped store) are noted without error and lower nothing.
        gate.note_fence(3).unwrap();
        gate.note_fence(0).unwrap();
        assert_eq!(gate.last(), 5);
        // A write that fails (root ignores permission bits, so a directory stands where the
        // temporary file goes) is reported, yet the mark in memory rises: 5 is now stale.
        std::fs::create_dir(gate.path().with_extension("epoch.tmp")).unwrap();
        assert!(gate.note_fence(8).is_err());
        assert_eq!(gate.last(), 8);
        assert!(matches!(gate.admit(5), Err(EpochError::Stale { .. })));
        assert_eq!(std::fs::read_to_string(gate.path()).unwrap().trim(), "5");
        // A start under 8 needs the durable write the fence could not make.
        assert!(matches!(gate.admit(8), Err(EpochError::Store { .. })));
        std::fs::remove_dir(gate.path().with_extension("epoch.tmp")).unwrap();
        gate.admit(8).unwrap();
        assert_eq!(std::fs::read_to_string(gate.path()).unwrap().trim(), "8");
    }

    #[test]
    fn a_garbled_epoch_file_is_an_error_not_a_zero() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("group.epoch"), "seven\n").unwrap();
        let err = EpochGate::open(dir.path(), "group").unwrap_err();
        assert!(err.to_string().contains("not an epoch"), "{err}");
        let missing = EpochGate::open(&dir.path().join("nope"), "group").unwrap_err();
        assert!(missing.to_string().contains("does not exist"), "{missing}");
    }
}
