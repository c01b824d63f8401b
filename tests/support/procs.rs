//! Process-level helpers: start the real binaries, run `quoratectl`, and make sure every
//! child is killed when the test ends, also when it panics.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// Path of a binary built from this package.
pub fn bin(name: &str) -> PathBuf {
    match name {
        "quorate-agent" => PathBuf::from(env!("CARGO_BIN_EXE_quorate-agent")),
        "quorate-witness" => PathBuf::from(env!("CARGO_BIN_EXE_quorate-witness")),
        "quoratectl" => PathBuf::from(env!("CARGO_BIN_EXE_quoratectl")),
        other => panic!("unknown binary {other}"),
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Daemon {
    /// The child.
    pub child: Child,
    /// Where its standard error goes.
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `binary --config config`, logging to `log`.
    pub fn start(binary: &str, config: &Path, log: &Path) -> Daemon {
        let file = std::fs::File::create(log).expect("log file");
        let child = Command::new(bin(binary))
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("start daemon");
        Daemon {
            child,
            log: log.to_path_buf(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs quoratectl with `args` and returns its output.
pub fn quoratectl(args: &[&str]) -> Output {
    Command::new(bin("quoratectl"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run quoratectl")
}

/// `quoratectl --endpoint 127.0.0.1:PORT status --json`, parsed; `None` on failure.
pub fn status_json(port: u16) -> Option<serde_json::Value> {
    let endpoint = format!("127.0.0.1:{port}");
    let out = quoratectl(&[
        "--endpoint",
        &endpoint,
        "--timeout-ms",
        "1500",
        "status",
        "--json",
    ]);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}
