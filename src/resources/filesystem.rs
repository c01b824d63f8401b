//! The filesystem agent: mounts the replicated block device where MySQL keeps its data.
//!
//! Mounting is a direct `mount(2)` (no `mount` command, no fstab), idempotent: a start finds an
//! existing mount of the right device at the mount point and is done. `monitor` reads
//! `/proc/self/mountinfo` and says running only when the configured device is the top mount at
//! the mount point and both the mount and its superblock are read-write (ext4's
//! `errors=remount-ro` turns the superblock read-only behind the mount's back).
//!
//! Stopping must not fail quietly: a filesystem left mounted keeps the disk from being demoted
//! and the other node from taking over. So when `umount(2)` says busy, the agent finds every
//! process holding something under the mount point (cwd, root, executable, open files, mappings)
//! and terminates them, SIGTERM then SIGKILL, and tries again. If the filesystem is still mounted
//! after that (a process stuck in the kernel), stop fails with [`Recovery::Fence`]. It never
//! detaches lazily: a lazy unmount hides the mount while writers keep writing to the disk.

use crate::resources::agent::{ActionContext, AgentError, Recovery, ResourceAgent, ResourceState};
use crate::resources::procs::{self, Holder};
use async_trait::async_trait;
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn default_term_grace_ms() -> u64 {
    5_000
}
fn default_kill_grace_ms() -> u64 {
    5_000
}
fn default_monitor_timeout_ms() -> u64 {
    5_000
}
fn default_umount_attempts() -> u32 {
    3
}

/// The filesystem agent's settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemConfig {
    /// The block device to mount, e.g. `/dev/drbd0`.
    pub device: PathBuf,
    /// Where to mount it; created if missing.
    pub mount_point: PathBuf,
    /// The filesystem type, e.g. `ext4`.
    pub fstype: String,
    /// Mount options as in fstab, comma-separated (`noatime,errors=remount-ro`).
    #[serde(default)]
    pub options: String,
    /// How long holders get after SIGTERM before SIGKILL, in milliseconds.
    #[serde(default = "default_term_grace_ms")]
    pub term_grace_ms: u64,
    /// How long to wait for killed holders to vanish, in milliseconds.
    #[serde(default = "default_kill_grace_ms")]
    pub kill_grace_ms: u64,
    /// How long `monitor` may take, in milliseconds.
    #[serde(default = "default_monitor_timeout_ms")]
    pub monitor_timeout_ms: u64,
    /// How many times stop tries `umount` (killing holders in between) before it gives up.
    #[serde(default = "default_umount_attempts")]
    pub umount_attempts: u32,
}

/// Options of mount(8) that this agent will not pass on: they change what "mounted" means.
const REFUSED_OPTIONS: &[&str] = &[
    "ro", "bind", "rbind", "remount", "move", "loop", "noauto", "auto", "user", "users", "nofail",
    "_netdev",
];

/// Splits fstab-style options into `mount(2)` flags and the filesystem's own data string.
pub fn parse_options(options: &str) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for word in options.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match word {
            "defaults" | "rw" | "async" | "suid" | "dev" | "exec" | "atime" => {}
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "lazytime" => flags |= MsFlags::MS_LAZYTIME,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            "dirsync" => flags |= MsFlags::MS_DIRSYNC,
            other => data.push(other.to_string()),
        }
    }
    (flags, data.join(","))
}

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// The device number (major, minor) of the mounted filesystem.
    pub dev: (u64, u64),
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The filesystem type.
    pub fstype: String,
    /// The mount source (usually the device path).
    pub source: String,
    /// True when both the mount and the superblock are read-write.
    pub read_write: bool,
}

fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let value = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|digits| u8::from_str_radix(digits, 8).ok());
            if let Some(value) = value {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the text of `/proc/self/mountinfo`; lines it cannot read are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    let mut entries = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if dash < 6 || fields.len() < dash + 4 {
            continue;
        }
        let Some((major, minor)) = fields[2].split_once(':') else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else {
            continue;
        };
        let has_rw = |opts: &str| opts.split(',').any(|o| o == "rw");
        entries.push(MountEntry {
            dev: (major, minor),
            mount_point: PathBuf::from(unescape(fields[4])),
            fstype: fields[dash + 1].to_string(),
            source: unescape(fields[dash + 2]),
            read_write: has_rw(fields[5]) && has_rw(fields[dash + 3]),
        });
    }
    entries
}

/// Mounts a block device at a mount point and unmounts it for sure.
#[derive(Debug)]
pub struct FilesystemAgent {
    name: String,
    config: FilesystemConfig,
}

/// What the mount table says about our device and mount point.
#[derive(Debug)]
struct Observation {
    state: ResourceState,
    /// Our device is the top mount at the mount point.
    ours_on_top: bool,
    /// The device number, when the device could be read.
    dev: Option<(u64, u64)>,
    /// Where else our device is mounted.
    elsewhere: Vec<PathBuf>,
}

impl FilesystemAgent {
    /// A filesystem resource called `name`.
    pub fn new(name: &str, config: FilesystemConfig) -> Self {
        FilesystemAgent {
            name: name.to_string(),
            config,
        }
    }

    /// The agent's settings.
    pub fn config(&self) -> &FilesystemConfig {
        &self.config
    }

    fn mount_point(&self) -> PathBuf {
        self.config
            .mount_point
            .canonicalize()
            .unwrap_or_else(|_| self.config.mount_point.clone())
    }

    fn device_number(&self) -> Option<(u64, u64)> {
        use std::os::unix::fs::FileTypeExt;
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&self.config.device).ok()?;
        meta.file_type()
            .is_block_device()
            .then(|| procs::split_dev(meta.rdev()))
    }

    fn is_ours(&self, entry: &MountEntry, dev: Option<(u64, u64)>) -> bool {
        match dev {
            Some(dev) => entry.dev == dev,
            None => {
                let device = self
                    .config
                    .device
                    .canonicalize()
                    .unwrap_or_else(|_| self.config.device.clone());
                Path::new(&entry.source) == device
            }
        }
    }

    /// Reads the mount table (blocking).
    fn observe(&self) -> Observation {
        let dev = self.device_number();
        let mount_point = self.mount_point();
        let text = match std::fs::read_to_string("/proc/self/mountinfo") {
            Ok(text) => text,
            Err(e) => {
                return Observation {
                    state: ResourceState::Failed(format!("cannot read /proc/self/mountinfo: {e}")),
                    ours_on_top: false,
                    dev,
                    elsewhere: Vec::new(),
                }
            }
        };
        let entries = parse_mountinfo(&text);
        let top = entries.iter().rev().find(|e| e.mount_point == mount_point);
        let elsewhere: Vec<PathBuf> = entries
            .iter()
            .filter(|e| self.is_ours(e, dev) && e.mount_point != mount_point)
            .map(|e| e.mount_point.clone())
            .collect();
        let device = self.config.device.display();
        let at = mount_point.display();
        let ours_on_top = top.is_some_and(|t| self.is_ours(t, dev));
        let state = match top {
            Some(t) if ours_on_top && t.read_write => ResourceState::Running,
            Some(_) if ours_on_top => {
                ResourceState::Failed(format!("{device} is mounted at {at} but read-only"))
            }
            Some(t) => ResourceState::Failed(format!(
                "{} ({}) is mounted at {at}, not {device}",
                t.source, t.fstype
            )),
            None if !elsewhere.is_empty() => ResourceState::Failed(format!(
                "{device} is mounted at {} instead of {at}",
                elsewhere[0].display()
            )),
            None => ResourceState::Stopped,
        };
        Observation {
            state,
            ours_on_top,
            dev,
            elsewhere,
        }
    }

    async fn observe_async(&self) -> Observation {
        let me = FilesystemAgent::new(&self.name, self.config.clone());
        match tokio::task::spawn_blocking(move || me.observe()).await {
            Ok(o) => o,
            Err(e) => Observation {
                state: ResourceState::Failed(format!("mount table check panicked: {e}")),
                ours_on_top: false,
                dev: None,
                elsewhere: Vec::new(),
            },
        }
    }

    fn fail(&self, ctx: &ActionContext, recovery: Recovery, reason: String) -> AgentError {
        tracing::error!(resource = %self.name, epoch = ctx.epoch, reason = %reason, "filesystem action failed");
        AgentError::new(&self.name, recovery, reason)
    }

    async fn mount(&self, ctx: &ActionContext) -> Result<(), AgentError> {
        let mount_point = self.config.mount_point.clone();
        if !mount_point.exists() {
            std::fs::create_dir_all(&mount_point).map_err(|e| {
                self.fail(
                    ctx,
                    Recovery::MoveAway,
                    format!("cannot create mount point {}: {e}", mount_point.display()),
                )
            })?;
        }
        let (flags, data) = parse_options(&self.config.options);
        tracing::info!(
            resource = %self.name,
            epoch = ctx.epoch,
            command = "mount(2)",
            device = %self.config.device.display(),
            mount_point = %mount_point.display(),
            fstype = %self.config.fstype,
            options = %self.config.options,
            "mounting"
        );
        let device = self.config.device.clone();
        let fstype = self.config.fstype.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let data = (!data.is_empty()).then_some(data.as_str());
            nix::mount::mount(
                Some(&device),
                &mount_point,
                Some(fstype.as_str()),
                flags,
                data,
            )
        })
        .await;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(errno)) => {
                let recovery = match errno {
                    Errno::EINTR | Errno::EAGAIN => Recovery::Retry,
                    _ => Recovery::MoveAway,
                };
                Err(self.fail(ctx, recovery, mount_error(errno, &self.config)))
            }
            Err(e) => Err(self.fail(ctx, Recovery::Retry, format!("mount task failed: {e}"))),
        }
    }

    /// Unmounts, killing holders between attempts; `term_grace` zero means SIGKILL at once.
    async fn unmount(&self, ctx: &ActionContext, term_grace: Duration) -> Result<(), AgentError> {
        let kill_grace = Duration::from_millis(self.config.kill_grace_ms);
        let mut last_holders: Vec<Holder> = Vec::new();
        for attempt in 1..=self.config.umount_attempts.max(1) {
            let seen = self.observe_async().await;
            if !seen.ours_on_top {
                return self.check_gone(ctx, seen);
            }
            let mount_point = self.mount_point();
            tracing::info!(
                resource = %self.name,
                epoch = ctx.epoch,
                command = "umount(2)",
                mount_point = %mount_point.display(),
                attempt,
                "unmounting"
            );
            let target = mount_point.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                nix::mount::umount2(&target, MntFlags::empty())
            })
            .await
            .unwrap_or(Err(Errno::EIO));
            match outcome {
                Ok(()) | Err(Errno::EINVAL) => continue,
                Err(Errno::EBUSY) => {}
                Err(errno) => {
                    return Err(self.fail(
                        ctx,
                        Recovery::Fence,
                        format!("umount {} failed: {errno}", mount_point.display()),
                    ))
                }
            }
            let dev = seen.dev;
            let scan_at = mount_point.clone();
            let holders = tokio::task::spawn_blocking(move || procs::find_holders(&scan_at, dev))
                .await
                .unwrap_or_default();
            for h in &holders {
                tracing::warn!(
                    resource = %self.name,
                    epoch = ctx.epoch,
                    pid = h.id.pid,
                    comm = %h.comm,
                    holds = %h.how,
                    "process keeps the mount busy; terminating it"
                );
            }
            let ids: Vec<procs::ProcessId> = holders.iter().map(|h| h.id).collect();
            let survivors = if term_grace.is_zero() {
                for id in &ids {
                    procs::signal(*id, nix::sys::signal::Signal::SIGKILL, false);
                }
                procs::wait_gone(&ids, kill_grace).await
            } else {
                procs::terminate(&ids, false, term_grace, kill_grace).await
            };
            for id in &survivors {
                tracing::error!(resource = %self.name, epoch = ctx.epoch, pid = id.pid, "holder survived SIGKILL (stuck in the kernel?)");
            }
            if holders.is_empty() {
                // Busy with no holder in sight: a reference just going away, or one we cannot
                // see (another mount namespace). Give it a moment before the next attempt.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            last_holders = holders;
        }
        let seen = self.observe_async().await;
        if seen.ours_on_top {
            let who: Vec<String> = last_holders
                .iter()
                .map(|h| format!("pid {} ({}) {}", h.id.pid, h.comm, h.how))
                .collect();
            return Err(self.fail(
                ctx,
                Recovery::Fence,
                format!(
                    "{} is still mounted after {} umount attempts; holders: {}",
                    self.mount_point().display(),
                    self.config.umount_attempts.max(1),
                    if who.is_empty() {
                        "none found".to_string()
                    } else {
                        who.join(", ")
                    }
                ),
            ));
        }
        self.check_gone(ctx, seen)
    }

    fn check_gone(&self, ctx: &ActionContext, seen: Observation) -> Result<(), AgentError> {
        if seen.elsewhere.is_empty() {
            return Ok(());
        }
        let places: Vec<String> = seen
            .elsewhere
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        Err(self.fail(
            ctx,
            Recovery::Fence,
            format!(
                "{} is still mounted at {}; quorate only unmounts its own mount point",
                self.config.device.display(),
                places.join(", ")
            ),
        ))
    }
}

fn mount_error(errno: Errno, config: &FilesystemConfig) -> String {
    let device = config.device.display();
    let what = match errno {
        Errno::ENOENT => "the device or the mount point does not exist".to_string(),
        Errno::ENOTBLK => "the device is not a block device".to_string(),
        Errno::ENODEV => format!("the kernel does not know filesystem type {}", config.fstype),
        Errno::EBUSY => "the device is busy or already mounted elsewhere".to_string(),
        Errno::EINVAL => format!(
            "bad superblock on {device} or bad options {:?} for {}",
            config.options, config.fstype
        ),
        Errno::EACCES | Errno::EROFS => "the device is read-only (DRBD not Primary?)".to_string(),
        other => other.desc().to_string(),
    };
    format!(
        "mount {device} at {} failed: {errno}: {what}",
        config.mount_point.display()
    )
}

#[async_trait]
impl ResourceAgent for FilesystemAgent {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "filesystem"
    }

    fn validate(&self) -> Vec<String> {
        use std::os::unix::fs::FileTypeExt;
        let c = &self.config;
        let mut problems = Vec::new();
        if !c.device.is_absolute() {
            problems.push(format!("device {:?} is not an absolute path", c.device));
        } else {
            match std::fs::metadata(&c.device) {
                Ok(m) if !m.file_type().is_block_device() => problems.push(format!(
                    "device {} is not a block device",
                    c.device.display()
                )),
                Ok(_) => {}
                // A DRBD device appears only once the resource is up (and the test stand-in's
                // only while Primary): a missing device is start's error, not a config problem.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => problems.push(format!("device {}: {e}", c.device.display())),
            }
        }
        if !c.mount_point.is_absolute() {
            problems.push(format!(
                "mount_point {:?} is not an absolute path",
                c.mount_point
            ));
        } else if c.mount_point == Path::new("/") {
            problems.push("mount_point must not be /".to_string());
        } else if c.mount_point.exists() && !c.mount_point.is_dir() {
            problems.push(format!(
                "mount_point {} is not a directory",
                c.mount_point.display()
            ));
        }
        if c.fstype.trim().is_empty() {
            problems.push("fstype is empty".to_string());
        } else if let Ok(known) = std::fs::read_to_string("/proc/filesystems") {
            if !known
                .lines()
                .any(|l| l.split_whitespace().last() == Some(c.fstype.as_str()))
            {
                problems.push(format!(
                    "fstype {} is not in /proc/filesystems (load its kernel module)",
                    c.fstype
                ));
            }
        }
        for word in c.options.split(',').map(str::trim) {
            if REFUSED_OPTIONS.contains(&word) {
                problems.push(format!("option {word} is not supported here; remove it"));
            }
        }
        if c.kill_grace_ms == 0 {
            problems.push("kill_grace_ms must be above 0".to_string());
        }
        if c.monitor_timeout_ms == 0 {
            problems.push("monitor_timeout_ms must be above 0".to_string());
        }
        if c.umount_attempts == 0 {
            problems.push("umount_attempts must be at least 1".to_string());
        }
        problems
    }

    async fn start(&self, ctx: &ActionContext) -> Result<(), AgentError> {
        match self.observe_async().await.state {
            ResourceState::Running => {
                tracing::info!(resource = %self.name, epoch = ctx.epoch, "already mounted");
                return Ok(());
            }
            ResourceState::Failed(why) => {
                return Err(self.fail(ctx, Recovery::MoveAway, format!("cannot mount: {why}")))
            }
            ResourceState::Stopped | ResourceState::Unknown => {}
        }
        self.mount(ctx).await?;
        match self.observe_async().await.state {
            ResourceState::Running => {
                tracing::info!(resource = %self.name, epoch = ctx.epoch, "mounted");
                Ok(())
            }
            other => Err(self.fail(
                ctx,
                Recovery::MoveAway,
                format!("mount succeeded but the mount table says {other}"),
            )),
        }
    }

    async fn stop(&self, ctx: &ActionContext) -> Result<(), AgentError> {
        self.unmount(ctx, Duration::from_millis(self.config.term_grace_ms))
            .await?;
        tracing::info!(resource = %self.name, epoch = ctx.epoch, "unmounted");
        Ok(())
    }

    async fn monitor(&self) -> ResourceState {
        let timeout = Duration::from_millis(self.config.monitor_timeout_ms);
        match tokio::time::timeout(timeout, self.observe_async()).await {
            Ok(seen) => seen.state,
            Err(_) => {
                ResourceState::Failed(format!("mount table check took longer than {timeout:?}"))
            }
        }
    }

    async fn fence(&self, ctx: &ActionContext) -> Result<(), AgentError> {
        self.unmount(ctx, Duration::ZERO).await?;
        tracing::warn!(resource = %self.name, epoch = ctx.epoch, "unmounted (fence)");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_parse_with_escapes_and_optional_fields() {
        let text = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
98 29 7:3 / /srv/my\\040data rw,noatime shared:50 master:2 - ext4 /dev/loop3 rw
99 29 7:4 / /srv/ro rw,relatime - ext4 /dev/loop4 ro,errors=remount-ro
garbage line
";
        let entries = parse_mountinfo(text);
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[1].mount_point, PathBuf::from("/srv/my data"));
        assert_eq!(entries[1].dev, (7, 3));
        assert_eq!(entries[1].source, "/dev/loop3");
        assert!(entries[1].read_write);
        assert!(
            !entries[2].read_write,
            "a read-only superblock is not read-write"
        );
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let (flags, data) = parse_options("noatime, nodev,errors=remount-ro,data=ordered,defaults");
        assert!(flags.contains(MsFlags::MS_NOATIME));
        assert!(flags.contains(MsFlags::MS_NODEV));
        assert_eq!(data, "errors=remount-ro,data=ordered");
        assert_eq!(parse_options(""), (MsFlags::empty(), String::new()));
    }

    #[test]
    fn validate_lists_every_problem() {
        let agent = FilesystemAgent::new(
            "fs",
            FilesystemConfig {
                device: "dev/loop0".into(),
                mount_point: "/".into(),
                fstype: "nosuchfs".into(),
                options: "ro,noatime,bind".into(),
                term_grace_ms: 1,
                kill_grace_ms: 0,
                monitor_timeout_ms: 1,
                umount_attempts: 0,
            },
        );
        let problems = agent.validate();
        let text = problems.join("\n");
        assert_eq!(problems.len(), 7, "{text}");
        for needle in [
            "absolute",
            "must not be /",
            "nosuchfs",
            "option ro",
            "option bind",
            "kill_grace_ms",
            "umount_attempts",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn unknown_config_fields_are_refused() {
        let err = serde_json::from_str::<FilesystemConfig>(
            r#"{"device":"/dev/loop0","mount_point":"/mnt","fstype":"ext4","lazy":true}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `lazy`"), "{err}");
    }
}
