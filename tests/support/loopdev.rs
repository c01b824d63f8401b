//! Shared test support: prerequisite gating, tracing, and a loop-device ext4 image that cleans up
//! after itself even when a test fails.

use quorate::resources::filesystem::parse_mountinfo;
use quorate::resources::procs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// True when the prerequisite holds. When it does not: in CI (`CI` set) the test fails, elsewhere
/// it prints why it skips and returns false.
pub fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("prerequisite missing (CI is set, so this fails instead of skipping): {what}");
    }
    eprintln!("SKIPPED: prerequisite missing: {what}");
    false
}

/// True when running as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Finds `program` on PATH or in the sbin directories.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file());
    found
}

/// Sends the agents' logs to the test output (once per test binary).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}

/// Runs a command, failing with its output if it does not succeed.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A free TCP port on 127.0.0.1 (free when asked; the caller binds it soon after).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

/// An ext4 image file attached to a loop device. Dropping it kills whatever holds its mounts,
/// unmounts every mount of the device, detaches it and removes the image.
pub struct LoopImage {
    /// The image file.
    pub image: PathBuf,
    /// The loop device, e.g. `/dev/loop3`.
    pub device: PathBuf,
}

/// Whether this machine can run loop-device tests, and if not, why.
pub fn loop_prerequisites() -> Result<(), String> {
    if !is_root() {
        return Err("not root".into());
    }
    for tool in ["mkfs.ext4", "losetup"] {
        if which(tool).is_none() {
            return Err(format!("{tool} not found (install e2fsprogs / mount)"));
        }
    }
    if !Path::new("/dev/loop-control").exists() {
        return Err("/dev/loop-control missing".into());
    }
    Ok(())
}

impl LoopImage {
    /// Creates a sparse `size_mb` MiB ext4 image in `dir` and attaches it.
    pub fn create(dir: &Path, size_mb: u64) -> Result<Self, String> {
        let image = dir.join("disk.img");
        let file = std::fs::File::create(&image).map_err(|e| e.to_string())?;
        file.set_len(size_mb * 1024 * 1024)
            .map_err(|e| e.to_string())?;
        drop(file);
        let image_arg = image.to_string_lossy().into_owned();
        run("mkfs.ext4", &["-q", "-F", &image_arg])?;
        let device = run("losetup", &["--find", "--show", &image_arg])?;
        Ok(LoopImage {
            image,
            device: PathBuf::from(device.trim()),
        })
    }

    /// Mounts the device at `at` (for tests that need it mounted without the agent).
    pub fn mount(&self, at: &Path) -> Result<(), String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        nix::mount::mount(
            Some(&self.device),
            at,
            Some("ext4"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| format!("mount {} at {}: {e}", self.device.display(), at.display()))
    }

    /// Where the device is mounted now, topmost last.
    pub fn mounts(&self) -> Vec<PathBuf> {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::metadata(&self.device) else {
            return Vec::new();
        };
        let dev = procs::split_dev(meta.rdev());
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        parse_mountinfo(&text)
            .into_iter()
            .filter(|e| e.dev == dev)
            .map(|e| e.mount_point)
            .collect()
    }
}

impl Drop for LoopImage {
    fn drop(&mut self) {
        // Thaw first, in case a test froze the filesystem.
        for at in self.mounts() {
            let _ = Command::new("fsfreeze").arg("--unfreeze").arg(&at).output();
        }
        for _ in 0..5 {
            let mounts = self.mounts();
            if mounts.is_empty() {
                break;
            }
            for at in mounts.iter().rev() {
                let holders = procs::find_holders(at, None);
                let ids: Vec<procs::ProcessId> = holders.iter().map(|h| h.id).collect();
                for id in &ids {
                    procs::signal(*id, nix::sys::signal::Signal::SIGKILL, false);
                }
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                while ids.iter().any(|id| procs::is_alive(*id))
                    && std::time::Instant::now() < deadline
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                if let Err(e) = nix::mount::umount2(at, nix::mount::MntFlags::empty()) {
                    eprintln!("cleanup: umount {} failed: {e}", at.display());
                }
            }
        }
        let device = self.device.to_string_lossy().into_owned();
        if let Err(e) = run("losetup", &["-d", &device]) {
            eprintln!("cleanup: {e}");
        }
        let _ = std::fs::remove_file(&self.image);
    }
}
