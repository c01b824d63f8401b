//! The fencing-token gate: a resource group acts only for the newest owner epoch it has seen.
//!
//! Ownership moves with a strictly increasing epoch. A request carrying an older epoch comes from
//! a past owner term (a delayed message, a retried RPC, a stale decision) and must not touch the
//! resources, even after this process restarts. So the highest epoch acted on is written to a
//! small file in the state directory *before* the action runs: written to a temporary file,
//! synced, renamed over the old one, and the directory synced, so a crash leaves either the old
//! or the new value and never a torn one. An epoch equal to the last one is allowed, so a retry
//! of the same owner term goes through.

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
    last: std::sync::Mutex<u64>,
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
            last: std::sync::Mutex::new(last),
        })
    }

    /// The highest epoch acted on so far (0 before any).
    pub fn last(&self) -> u64 {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The file the epoch is kept in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lets `epoch` through if it is not older than the last one, recording it durably first.
    pub fn admit(&self, epoch: u64) -> Result<(), EpochError> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if epoch < *last {
            return Err(EpochError::Stale { epoch, last: *last });
        }
        if epoch > *last {
            self.persist(epoch).map_err(|e| EpochError::Store {
                path: self.path.clone(),
                message: e.to_string(),
            })?;
            *last = epoch;
        }
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
    fn a_garbled_epoch_file_is_an_error_not_a_zero() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("group.epoch"), "seven\n").unwrap();
        let err = EpochGate::open(dir.path(), "group").unwrap_err();
        assert!(err.to_string().contains("not an epoch"), "{err}");
        let missing = EpochGate::open(&dir.path().join("nope"), "group").unwrap_err();
        assert!(missing.to_string().contains("does not exist"), "{missing}");
    }
}
