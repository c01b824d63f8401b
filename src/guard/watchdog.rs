//! The hardware watchdog, the guard's last resort when the whole node freezes.
//!
//! Linux's watchdog API (`/dev/watchdog`): opening the device starts the timer; every write
//! "pets" it; if no write arrives within the device's timeout (often 60 s by the driver, or
//! `guard.watchdog_timeout_s`, which [`Watchdog::set_timeout`] sets with `WDIOC_SETTIMEOUT`),
//! the kernel resets the machine. Closing the
//! device does **not** stop the timer unless the magic character `'V'` was written just before:
//! that "magic close" is the only way a clean stop of the guard avoids a reset (and with the
//! driver's `nowayout` option not even that). So:
//!
//! - the guard pets with a zero byte, never `'V'`;
//! - a clean stop writes `'V'` and then closes ([`Watchdog::close_magic`]);
//! - a stop after a failed fence, a crash or a panic just drops the file (no `'V'`), so the kernel
//!   resets the node: the safe outcome when MySQL may still run without a lease.
//!
//! The file is opened non-blocking, so a FIFO with a full buffer (tests) costs one missed pet
//! instead of freezing the guard, and a FIFO without a reader fails to open with a clear error.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

nix::ioctl_readwrite!(
    /// `WDIOC_SETTIMEOUT` from linux/watchdog.h: `_IOWR('W', 6, int)`.
    wdioc_settimeout,
    b'W',
    6,
    nix::libc::c_int
);

/// The byte written to pet the watchdog. Anything but `'V'` will do.
pub const PET_BYTE: u8 = 0;
/// The magic close character: written right before a clean close so the timer stops.
pub const MAGIC_CLOSE: u8 = b'V';

/// A watchdog problem. The guard keeps fencing by its own timer whatever happens here.
#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    /// The device could not be opened.
    #[error("cannot open watchdog {path}: {source}; check the path and that the watchdog driver is loaded (a FIFO needs a reader)")]
    Open {
        /// The configured path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The timeout could not be set (for example, the path is not a watchdog device).
    #[error("cannot set the timeout of watchdog {path} to {seconds} s: {source}; is it a watchdog device?")]
    Timeout {
        /// The configured path.
        path: PathBuf,
        /// The requested timeout.
        seconds: u32,
        /// Why.
        source: nix::Error,
    },
    /// A pet or the magic close could not be written.
    #[error(
        "cannot write to watchdog {path}: {source}; the node may be reset when the timer runs out"
    )]
    Write {
        /// The configured path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// An open watchdog device (or, in tests, a plain file or FIFO standing in for it).
#[derive(Debug)]
pub struct Watchdog {
    path: PathBuf,
    file: File,
}

impl Watchdog {
    /// Opens the watchdog for writing, which starts the kernel's timer on a real device.
    pub fn open(path: &Path) -> Result<Watchdog, WatchdogError> {
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(path)
            .map_err(|source| WatchdogError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Watchdog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// The configured path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets the device's timeout (`WDIOC_SETTIMEOUT`) and returns the one the driver chose,
    /// which may be rounded.
    pub fn set_timeout(&self, seconds: u32) -> Result<u32, WatchdogError> {
        let mut value = nix::libc::c_int::try_from(seconds).unwrap_or(nix::libc::c_int::MAX);
        // SAFETY: WDIOC_SETTIMEOUT reads and writes one c_int through the pointer, which
        // points at `value` for the duration of the call; the descriptor is open.
        unsafe { wdioc_settimeout(self.file.as_raw_fd(), &mut value) }.map_err(|source| {
            WatchdogError::Timeout {
                path: self.path.clone(),
                seconds,
                source,
            }
        })?;
        Ok(u32::try_from(value).unwrap_or(seconds))
    }

    /// Pets the watchdog: writes one byte that is not the magic close character.
    pub fn pet(&mut self) -> Result<(), WatchdogError> {
        self.write_byte(PET_BYTE)
    }

    /// Clean stop: writes `'V'` and closes, so the kernel stops the timer instead of resetting.
    pub fn close_magic(mut self) -> Result<(), WatchdogError> {
        self.write_byte(MAGIC_CLOSE)
        // `self.file` is closed when `self` drops here, right after the 'V'.
    }

    fn write_byte(&mut self, byte: u8) -> Result<(), WatchdogError> {
        self.file
            .write_all(&[byte])
            .map_err(|source| WatchdogError::Write {
                path: self.path.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_the_timeout_of_a_plain_file_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("not-a-watchdog");
        std::fs::write(&path, b"").expect("create");
        let watchdog = Watchdog::open(&path).expect("open");
        let error = watchdog.set_timeout(5).unwrap_err().to_string();
        assert!(
            error.contains("not-a-watchdog")
                && error.contains("5 s")
                && error.contains("is it a watchdog device"),
            "{error}"
        );
    }

    #[test]
    fn pets_append_zero_bytes_and_magic_close_ends_with_v() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("watchdog");
        std::fs::write(&path, b"").expect("create");
        let mut watchdog = Watchdog::open(&path).expect("open");
        watchdog.pet().expect("pet");
        watchdog.pet().expect("pet");
        assert_eq!(
            std::fs::read(&path).expect("read"),
            vec![PET_BYTE, PET_BYTE]
        );
        watchdog.close_magic().expect("close");
        assert_eq!(
            std::fs::read(&path).expect("read"),
            vec![PET_BYTE, PET_BYTE, b'V']
        );
    }

    #[test]
    fn missing_device_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("no-such-watchdog");
        let error = Watchdog::open(&path).unwrap_err().to_string();
        assert!(error.contains("no-such-watchdog"), "{error}");
    }

    #[test]
    fn fifo_without_reader_is_a_clear_error_not_a_hang() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fifo");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let error = Watchdog::open(&path).unwrap_err();
        assert!(matches!(error, WatchdogError::Open { .. }), "{error}");
    }
}
