//! One testbed host beyond its network namespace: a mount namespace of its own, kept alive by a
//! sleeping holder process, and a cgroup v2 directory that holds every process of the host.
//!
//! `ip netns exec` makes a fresh mount namespace per call, so a filesystem one process mounts
//! would be invisible to the next. Instead each host gets one mount namespace, made once by
//! `unshare --mount --propagation private` around a `sleep`, and every process of the host is
//! started with `nsenter --net=/run/netns/X --mount=/proc/<holder>/ns/mnt`. The process joins
//! the host's cgroup before it execs (the `pre_exec` writes to `cgroup.procs`), so killing or
//! freezing the cgroup is killing or freezing the whole host, children included.
//!
//! The cgroup v2 hierarchy is wherever `/proc/mounts` says `cgroup2` is mounted: on machines
//! with a hybrid layout that is `/sys/fs/cgroup/unified`, not `/sys/fs/cgroup`.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the cgroup v2 hierarchy is mounted, read from `/proc/mounts`.
pub fn cgroup2_root() -> Result<PathBuf, String> {
    let mounts = std::fs::read_to_string("/proc/mounts")
        .map_err(|e| format!("cannot read /proc/mounts: {e}"))?;
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == "cgroup2")
        .map(|f| PathBuf::from(f[1]))
        .ok_or_else(|| "no cgroup2 hierarchy in /proc/mounts (the testbed needs cgroup v2)".into())
}

/// Writes `value` into a cgroup control file.
pub fn write_control(dir: &Path, file: &str, value: &str) -> Result<(), String> {
    let path = dir.join(file);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| format!("cannot write {value:?} to {}: {e}", path.display()))
}

/// True while any process is in the cgroup or below it.
pub fn populated(dir: &Path) -> bool {
    match std::fs::read_to_string(dir.join("cgroup.events")) {
        Ok(text) => text.lines().any(|l| l.trim() == "populated 1"),
        Err(_) => false,
    }
}

/// Kills every process in the cgroup and waits until it is empty.
pub fn kill_cgroup(dir: &Path, timeout: Duration) -> Result<(), String> {
    if !dir.exists() {
        return Ok(());
    }
    // A frozen cgroup dies as well, but thaw it so nothing is left frozen if the kill fails.
    let _ = write_control(dir, "cgroup.freeze", "0");
    write_control(dir, "cgroup.kill", "1")?;
    let deadline = Instant::now() + timeout;
    while populated(dir) {
        if Instant::now() >= deadline {
            return Err(format!(
                "cgroup {} still has processes {timeout:?} after cgroup.kill",
                dir.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// One host's mount namespace and cgroup (its network namespace belongs to the switch).
pub struct HostEnv {
    /// The short name (`a`, `b`, `w`, `c`).
    pub name: String,
    /// The network namespace's name under `/run/netns`.
    pub netns: String,
    /// The host's address on the test segment.
    pub ip: &'static str,
    /// The host's cgroup directory.
    pub cgroup: PathBuf,
    holder: Option<Child>,
}

impl HostEnv {
    /// Makes the cgroup under `parent` and the mount namespace holder for the host.
    pub fn create(
        name: &str,
        netns: &str,
        ip: &'static str,
        parent: &Path,
    ) -> Result<HostEnv, String> {
        let cgroup = parent.join(name);
        std::fs::create_dir(&cgroup)
            .map_err(|e| format!("cannot create cgroup {}: {e}", cgroup.display()))?;
        let mut host = HostEnv {
            name: name.to_string(),
            netns: netns.to_string(),
            ip,
            cgroup,
            holder: None,
        };
        host.start_holder()?;
        Ok(host)
    }

    /// Starts the holder of a fresh mount namespace (at creation, and to power the host on).
    pub fn start_holder(&mut self) -> Result<(), String> {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", self.netns))
            .args(["unshare", "--mount", "--propagation", "private"])
            .args(["sleep", "infinity"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = spawn_in_cgroup(&mut command, &self.cgroup).map_err(|e| {
            format!(
                "cannot start the mount namespace holder of {}: {e}",
                self.name
            )
        })?;
        let pid = child.id();
        self.holder = Some(child);
        let own = std::fs::read_link("/proc/self/ns/mnt").map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let ns = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
            if comm.trim() == "sleep" && ns.as_ref().is_some_and(|ns| *ns != own) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the holder of {} did not reach its own mount namespace",
                    self.name
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The holder's pid: `/proc/<pid>/ns/mnt` is the host's mount namespace.
    pub fn holder_pid(&self) -> Option<u32> {
        self.holder.as_ref().map(Child::id)
    }

    /// The host's mount table, or empty once the host is off.
    pub fn mountinfo(&self) -> String {
        match self.holder_pid() {
            Some(pid) => {
                std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default()
            }
            None => String::new(),
        }
    }

    /// A command that runs `program` inside the host (network and mount namespace).
    pub fn command(&self, program: &Path) -> Result<Command, String> {
        let pid = self
            .holder_pid()
            .ok_or_else(|| format!("host {} is powered off", self.name))?;
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg(format!("--mount=/proc/{pid}/ns/mnt"))
            .arg("--")
            .arg(program);
        Ok(command)
    }

    /// Starts `command` (from [`HostEnv::command`]) inside the host's cgroup.
    pub fn spawn(&self, command: &mut Command) -> Result<Child, String> {
        spawn_in_cgroup(command, &self.cgroup).map_err(|e| format!("on host {}: {e}", self.name))
    }

    /// Kills every process of the host (power off) and reaps the holder.
    pub fn kill_all(&mut self) -> Result<(), String> {
        let outcome = kill_cgroup(&self.cgroup, Duration::from_secs(10));
        if let Some(mut holder) = self.holder.take() {
            let _ = holder.kill();
            let _ = holder.wait();
        }
        outcome
    }

    /// Kills everything, then removes the cgroup directory.
    pub fn destroy(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = self.kill_all() {
            problems.push(e);
        }
        if self.cgroup.exists() {
            if let Err(e) = std::fs::remove_dir(&self.cgroup) {
                problems.push(format!(
                    "cannot remove cgroup {}: {e}",
                    self.cgroup.display()
                ));
            }
        }
        problems
    }
}

/// Spawns `command` so that the child joins `cgroup` before it execs.
pub fn spawn_in_cgroup(command: &mut Command, cgroup: &Path) -> Result<Child, String> {
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(cgroup.join("cgroup.procs"))
        .map_err(|e| format!("cannot open {}/cgroup.procs: {e}", cgroup.display()))?;
    let fd = procs.as_raw_fd();
    // SAFETY: the closure only calls write(2) on a descriptor that stays open until spawn
    // returns; "0" moves the calling (child) process.
    unsafe {
        command.pre_exec(move || {
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", command.get_program()))?;
    drop(procs);
    Ok(child)
}
