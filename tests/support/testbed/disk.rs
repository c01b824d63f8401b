//! The replicated disk of the testbed: one ext4 image shared through the DRBD stand-in
//! (`tests/tools/drbd_standin.rs`), with a MariaDB datadir initialised on it before the run.
//!
//! The stand-in's state directory (image, per-node state, ledger) lives in the run directory,
//! outside every host's namespaces; each management node gets a wrapper script that runs the
//! stand-in with its node name, which the node's agent uses as `drbdadm` and `drbdsetup`.
//!
//! The filesystem agent checks at start-up that its device exists and is a block device, as
//! `/dev/drbd0` does on a real node whatever its role. The stand-in only links `<node>.dev` to a
//! loop device while the node is Primary, so before the agents start each node's link path is
//! given a placeholder block device node (a loop major/minor that is never attached); the
//! stand-in replaces it on promotion. Mounting the placeholder fails, as mounting a Secondary
//! DRBD device would.

use super::history::RunDir;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The DRBD resource name the testbed uses.
pub const RESOURCE: &str = "r0";
/// The MySQL user the agents' probes, the writer probes and the client log in as.
pub const DB_USER: &str = "quorate";
/// Its password.
pub const DB_PASSWORD: &str = "testbed-pw";
/// The image size in MiB (sparse).
const IMAGE_MB: u64 = 256;
/// A loop minor far above anything `losetup --find` hands out here: the placeholder device.
const PLACEHOLDER_MINOR: u64 = 1_048_000;

/// Options shared by `mariadb-install-db` and every `mariadbd`, so both agree on the files.
pub fn innodb_options() -> Vec<String> {
    vec![
        "--innodb-buffer-pool-size=32M".into(),
        "--innodb-log-file-size=8M".into(),
    ]
}

/// Runs a program and returns its standard output, or a message with its standard error.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// One line of the stand-in's ledger (defined with the checkers, which read it offline too).
pub use super::checks::RoleChange;

/// The shared disk.
pub struct Disk {
    /// The stand-in's state directory.
    pub state: PathBuf,
    /// Directory of the per-node wrapper scripts.
    bin: PathBuf,
    /// The management nodes.
    nodes: Vec<String>,
}

/// Unmounts and detaches the preparation mount, whatever happens.
struct PrepMount {
    device: String,
    at: PathBuf,
    mounted: bool,
}

impl Drop for PrepMount {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = nix::mount::umount2(&self.at, nix::mount::MntFlags::empty()) {
                eprintln!("testbed: cannot unmount {}: {e}", self.at.display());
            }
        }
        if let Err(e) = run("losetup", &["-d", &self.device]) {
            eprintln!("testbed: {e}");
        }
        let _ = wait_detached(&self.device, Duration::from_secs(10));
    }
}

/// Waits until the kernel really released a detached loop device.
fn wait_detached(device: &str, timeout: Duration) -> Result<(), String> {
    let name = device.trim_start_matches("/dev/");
    let backing = PathBuf::from(format!("/sys/block/{name}/loop/backing_file"));
    let deadline = Instant::now() + timeout;
    while backing.exists() {
        if Instant::now() >= deadline {
            return Err(format!(
                "{device} still attached {timeout:?} after losetup -d"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

impl Disk {
    /// Makes the image, initialises MariaDB's datadir on it with `sql` run at bootstrap, writes
    /// the wrappers and brings the resource `up` on every node.
    pub fn prepare(
        run_dir: &RunDir,
        nodes: &[&str],
        standin: &Path,
        sql: &str,
    ) -> Result<Disk, String> {
        let state = run_dir.join("drbd");
        let res_dir = state.join(RESOURCE);
        std::fs::create_dir_all(&res_dir).map_err(|e| e.to_string())?;
        let image = res_dir.join("disk.img");
        let file = std::fs::File::create(&image).map_err(|e| e.to_string())?;
        file.set_len(IMAGE_MB * 1024 * 1024)
            .map_err(|e| e.to_string())?;
        drop(file);
        let image_text = image.to_string_lossy().into_owned();
        run("mkfs.ext4", &["-q", "-F", &image_text])?;

        let device = run("losetup", &["--find", "--show", &image_text])?
            .trim()
            .to_string();
        let at = run_dir.join("prep-mnt");
        std::fs::create_dir_all(&at).map_err(|e| e.to_string())?;
        let mut prep = PrepMount {
            device: device.clone(),
            at: at.clone(),
            mounted: false,
        };
        nix::mount::mount(
            Some(device.as_str()),
            &at,
            Some("ext4"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| format!("cannot mount {device} at {}: {e}", at.display()))?;
        prep.mounted = true;
        let extra = run_dir.join("bootstrap.sql");
        std::fs::write(&extra, sql).map_err(|e| e.to_string())?;
        let mut args = vec![
            "--no-defaults".to_string(),
            format!("--datadir={}", at.join("data").display()),
            "--user=root".into(),
            "--auth-root-authentication-method=normal".into(),
            "--skip-test-db".into(),
            format!("--extra-file={}", extra.display()),
            format!("--tmpdir={}", run_dir.path.display()),
        ];
        args.extend(innodb_options());
        let log =
            std::fs::File::create(run_dir.join("install-db.log")).map_err(|e| e.to_string())?;
        let status = Command::new("mariadb-install-db")
            .args(&args)
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .status()
            .map_err(|e| format!("cannot run mariadb-install-db: {e}"))?;
        if !status.success() {
            return Err(format!(
                "mariadb-install-db failed ({status}); see {}",
                run_dir.join("install-db.log").display()
            ));
        }
        drop(prep);
        let _ = std::fs::remove_dir(&at);

        let bin = run_dir.join("bin");
        let disk = Disk {
            state,
            bin,
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
        };
        for node in nodes {
            let dir = disk.bin.join(node);
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let script = dir.join("drbd");
            std::fs::write(
                &script,
                format!(
                    "#!/bin/sh\n# testbed: the DRBD stand-in (not DRBD) as node {node}\nexec '{}' --state-dir '{}' --node '{node}' \"$@\"\n",
                    standin.display(),
                    disk.state.display()
                ),
            )
            .map_err(|e| e.to_string())?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| e.to_string())?;
            disk.standin(node, &["up", RESOURCE])?;
            disk.place_holder(node)?;
        }
        Ok(disk)
    }

    fn place_holder(&self, node: &str) -> Result<(), String> {
        let link = self.device(node);
        let dev = nix::sys::stat::makedev(7, PLACEHOLDER_MINOR);
        nix::sys::stat::mknod(
            &link,
            nix::sys::stat::SFlag::S_IFBLK,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            dev,
        )
        .map_err(|e| format!("cannot make the placeholder device {}: {e}", link.display()))
    }

    /// The shared image.
    pub fn image(&self) -> PathBuf {
        self.state.join(RESOURCE).join("disk.img")
    }

    /// The wrapper that is `drbdadm`/`drbdsetup` for `node`.
    pub fn wrapper(&self, node: &str) -> PathBuf {
        self.bin.join(node).join("drbd")
    }

    /// The device path the filesystem agent of `node` mounts.
    pub fn device(&self, node: &str) -> PathBuf {
        self.state.join(RESOURCE).join(format!("{node}.dev"))
    }

    /// Runs the stand-in as `node` from the root namespace.
    pub fn standin(&self, node: &str, args: &[&str]) -> Result<String, String> {
        run(&self.wrapper(node).to_string_lossy(), args)
    }

    /// The ledger's lines, oldest first.
    pub fn ledger(&self) -> Result<Vec<RoleChange>, String> {
        let path = self.state.join("ledger.jsonl");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(|e| format!("ledger line {l:?}: {e}")))
            .collect()
    }

    /// Loop devices currently backed by the image.
    pub fn loop_devices(&self) -> Vec<String> {
        let image = self.image().to_string_lossy().into_owned();
        run("losetup", &["-j", &image])
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(':').next())
            .map(str::to_string)
            .collect()
    }

    /// Detaches every loop device backing the image (after every host is off).
    pub fn detach_all(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for device in self.loop_devices() {
            if let Err(e) = run("losetup", &["-d", &device]) {
                problems.push(e);
            }
            if let Err(e) = wait_detached(&device, Duration::from_secs(10)) {
                problems.push(e);
            }
        }
        problems
    }

    /// `e2fsck -fn` on the image (nothing may have it attached): `Err` with the output if not clean.
    pub fn fsck(&self) -> Result<(), String> {
        let image = self.image().to_string_lossy().into_owned();
        run("e2fsck", &["-fn", &image]).map(|_| ())
    }

    /// The management nodes.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }
}
