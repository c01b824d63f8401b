//! Reading and signalling processes through `/proc`, for the agents that must make sure
//! something no longer runs: the MySQL agent (is our mysqld alive, kill it) and the filesystem
//! agent (which processes keep the mount busy, kill them).
//!
//! A process is named by its pid *and* its start time (field 22 of `/proc/<pid>/stat`), so a pid
//! the kernel handed to a new process is never signalled by mistake. A zombie counts as gone: it
//! holds no files and runs no code, it only waits for its parent to reap it.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One process, named so that a reused pid is not mistaken for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessId {
    /// The process id.
    pub pid: i32,
    /// Its start time in clock ticks after boot.
    pub start_ticks: u64,
}

/// What `/proc/<pid>/stat` says about a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// The command name (`comm`), at most 15 bytes.
    pub comm: String,
    /// The state letter (R, S, D, Z, T, ...).
    pub state: char,
    /// The process group id.
    pub pgrp: i32,
    /// The start time in clock ticks after boot.
    pub start_ticks: u64,
}

/// Parses the text of `/proc/<pid>/stat`; the command name may hold spaces and parentheses.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); field N is rest[N - 3].
    Some(ProcStat {
        comm,
        state: rest.first()?.chars().next()?,
        pgrp: rest.get(2)?.parse().ok()?,
        start_ticks: rest.get(19)?.parse().ok()?,
    })
}

/// Reads `/proc/<pid>/stat`; `None` when there is no such process.
pub fn stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// The process's identity if it exists and is not a zombie.
pub fn identify(pid: i32) -> Option<ProcessId> {
    let st = stat(pid)?;
    if matches!(st.state, 'Z' | 'X' | 'x') {
        return None;
    }
    Some(ProcessId {
        pid,
        start_ticks: st.start_ticks,
    })
}

/// True while `id` still names a live (non-zombie) process.
pub fn is_alive(id: ProcessId) -> bool {
    identify(id.pid) == Some(id)
}

/// Sends `signal` to `id` if it is still that process; to its whole group if `group` and it leads
/// one. Returns false when the process was already gone.
pub fn signal(id: ProcessId, signal: Signal, group: bool) -> bool {
    let Some(st) = stat(id.pid) else {
        return false;
    };
    if st.start_ticks != id.start_ticks || matches!(st.state, 'Z' | 'X' | 'x') {
        return false;
    }
    let target = if group && st.pgrp == id.pid {
        Pid::from_raw(-id.pid)
    } else {
        Pid::from_raw(id.pid)
    };
    kill(target, signal).is_ok()
}

/// Polls until none of `ids` is alive or `timeout` passes; returns the ones still alive.
pub async fn wait_gone(ids: &[ProcessId], timeout: Duration) -> Vec<ProcessId> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let alive: Vec<ProcessId> = ids.iter().copied().filter(|id| is_alive(*id)).collect();
        if alive.is_empty() || tokio::time::Instant::now() >= deadline {
            return alive;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// SIGTERM, wait up to `term_grace`, then SIGKILL and wait up to `kill_grace`; returns the
/// processes that survived even SIGKILL (stuck in the kernel).
pub async fn terminate(
    ids: &[ProcessId],
    group: bool,
    term_grace: Duration,
    kill_grace: Duration,
) -> Vec<ProcessId> {
    for id in ids {
        signal(*id, Signal::SIGTERM, group);
    }
    let left = wait_gone(ids, term_grace).await;
    if left.is_empty() {
        return left;
    }
    for id in &left {
        signal(*id, Signal::SIGKILL, group);
    }
    wait_gone(&left, kill_grace).await
}

/// A process that uses something under a mount point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// Which process.
    pub id: ProcessId,
    /// Its command name.
    pub comm: String,
    /// How it holds the mount (`cwd`, `root`, `exe`, `fd 3`, `maps`) and the path seen.
    pub how: String,
}

/// Splits a Linux `dev_t` into (major, minor).
pub fn split_dev(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & 0xffff_f000);
    let minor = (dev & 0xff) | ((dev >> 12) & 0xffff_ff00);
    (major, minor)
}

fn under(path: &Path, mount_point: &Path) -> bool {
    path.starts_with(mount_point)
}

fn link_target(link: &Path) -> Option<PathBuf> {
    let target = std::fs::read_link(link).ok()?;
    let text = target.to_string_lossy();
    Some(PathBuf::from(
        text.strip_suffix(" (deleted)").unwrap_or(&text).to_string(),
    ))
}

/// Checks one `/proc/<pid>/...` link: by path under the mount point or by the device it is on.
fn link_holds(link: &Path, mount_point: &Path, dev: Option<(u64, u64)>) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let target = link_target(link)?;
    if under(&target, mount_point) {
        return Some(target.display().to_string());
    }
    let on_dev = dev.is_some_and(|d| {
        std::fs::metadata(link)
            .map(|m| split_dev(m.dev()) == d)
            .unwrap_or(false)
    });
    on_dev.then(|| format!("{} (on the device)", target.display()))
}

fn maps_hold(pid: i32, mount_point: &Path, dev: Option<(u64, u64)>) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(dev_field), Some(path)) = (fields.get(3), fields.get(5)) else {
            continue;
        };
        if under(Path::new(path), mount_point) {
            return Some((*path).to_string());
        }
        if let (Some(want), Some((major, minor))) = (dev, dev_field.split_once(':')) {
            let seen = (
                u64::from_str_radix(major, 16).ok(),
                u64::from_str_radix(minor, 16).ok(),
            );
            if seen == (Some(want.0), Some(want.1)) {
                return Some(format!("{path} (on the device)"));
            }
        }
    }
    None
}

/// Every process (but this one) whose cwd, root, executable, open files or mappings lie under
/// `mount_point` or on device `dev` (major, minor). Blocking: call from a blocking thread.
pub fn find_holders(mount_point: &Path, dev: Option<(u64, u64)>) -> Vec<Holder> {
    let me = std::process::id() as i32;
    let mut holders = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return holders;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Some(id) = identify(pid) else { continue };
        let base = entry.path();
        let mut how = None;
        for name in ["cwd", "root", "exe"] {
            if let Some(seen) = link_holds(&base.join(name), mount_point, dev) {
                how = Some(format!("{name} {seen}"));
                break;
            }
        }
        if how.is_none() {
            if let Ok(fds) = std::fs::read_dir(base.join("fd")) {
                for fd in fds.flatten() {
                    if let Some(seen) = link_holds(&fd.path(), mount_point, dev) {
                        how = Some(format!("fd {} {seen}", fd.file_name().to_string_lossy()));
                        break;
                    }
                }
            }
        }
        if how.is_none() {
            how = maps_hold(pid, mount_point, dev).map(|seen| format!("maps {seen}"));
        }
        if let Some(how) = how {
            let comm = stat(pid).map(|s| s.comm).unwrap_or_default();
            holders.push(Holder { id, comm, how });
        }
    }
    holders
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_names_parses() {
        let line = "4242 (my (odd) proc) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        let st = parse_stat(line).unwrap();
        assert_eq!(st.comm, "my (odd) proc");
        assert_eq!(st.state, 'S');
        assert_eq!(st.pgrp, 4242);
        assert_eq!(st.start_ticks, 987654);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = identify(std::process::id() as i32).unwrap();
        assert!(is_alive(me));
        let other = ProcessId {
            pid: me.pid,
            start_ticks: me.start_ticks + 1,
        };
        assert!(!is_alive(other));
        assert!(!signal(other, Signal::SIGTERM, false));
    }

    #[test]
    fn device_numbers_split_like_the_kernel() {
        // makedev(259, 3) and makedev(7, 1) in glibc's encoding.
        assert_eq!(split_dev((259 << 8) | 3), (259, 3));
        assert_eq!(split_dev(0x701), (7, 1));
        assert_eq!(
            split_dev((0x1000 << 32) | (5 << 8) | 0x12),
            (4096 + 5, 0x12)
        );
        assert_eq!(split_dev((1 << 32) | 0x12), (0, 0x10_0012));
    }

    #[tokio::test]
    async fn a_child_with_its_cwd_inside_is_found_and_terminated() {
        let dir = tempfile::tempdir().unwrap();
        let dir_path = dir.path().canonicalize().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("600")
            .current_dir(&dir_path)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let holders = tokio::task::spawn_blocking({
            let p = dir_path.clone();
            move || find_holders(&p, None)
        })
        .await
        .unwrap();
        let found = holders.iter().find(|h| h.id.pid == pid);
        assert!(
            found.is_some_and(|h| h.how.starts_with("cwd")),
            "{holders:?}"
        );
        let left = terminate(
            &[found.unwrap().id],
            false,
            Duration::from_secs(5),
            Duration::from_secs(5),
        )
        .await;
        assert!(left.is_empty());
        let status = child.wait().unwrap();
        assert!(!status.success());
    }
}
