//! STAND-IN FOR TESTS. THIS IS NOT DRBD AND REPLICATES NOTHING.
//!
//! The test machines have no DRBD kernel module, so quorate's tests point the DRBD agent's
//! `drbdadm` and `drbdsetup` paths at this program. It keeps DRBD's command-line shape, so the
//! agent's real command lines and its status parser are exercised unchanged:
//!
//! ```text
//! drbd_standin [--state-dir DIR] [--node NAME] VERB RESOURCE [--force] [--json] [--size-mb N]
//!   primary [--force] <res>    attach the shared image to a loop device, role Primary
//!   secondary <res>            detach it, role Secondary (refused while the device is open)
//!   status <res> [--json]      DRBD 9 style status; --json prints drbdsetup's JSON shape
//!   test-only: create-md <res> [--size-mb N] (make the shared ext4 image), up <res>, down <res>,
//!              connect <res>, disconnect <res>, outdate <res>
//! ```
//!
//! `--state-dir` (or `DRBD_STANDIN_STATE_DIR`) names a directory outside every namespace that all
//! nodes share; `--node` (or `DRBD_STANDIN_NODE`) says which node is speaking. Layout:
//! `<dir>/<res>/disk.img` (the one shared ext4 image), `<dir>/<res>/nodes/<node>.json` (per-node
//! role, disk state and whether its replication link is up), `<dir>/<res>/<node>.dev` (a symlink
//! to the node's loop device while it is Primary: what the filesystem agent mounts), and
//! `<dir>/ledger.jsonl`, one JSON line per role change with the node and a CLOCK_MONOTONIC
//! timestamp in nanoseconds.
//!
//! Rules it keeps, as DRBD does: `primary` is refused while a *connected* peer is Primary, and
//! for an Outdated or Inconsistent disk unless `--force`; `secondary` is refused while the device
//! is held open (mounted); `outdate` is refused on a Primary; two connected nodes resync at once
//! (an Outdated side becomes UpToDate); `connect` between two Primaries is a split brain and is
//! refused. What it deliberately does NOT do: prevent a disconnected dual Primary. That is
//! allowed and logged with `other_primaries`, because preventing it is quorate's job and the
//! checkers must be able to catch it.
//!
//! Exit codes: 0 ok, 1 usage, 10 no such resource, 11 state change refused, 20 environment
//! failure (losetup, files).

use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::Command;

struct Failure {
    code: i32,
    message: String,
}

fn fail(code: i32, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct NodeState {
    node_id: u32,
    role: String,
    disk: String,
    connected: bool,
    device: Option<String>,
}

struct Args {
    state_dir: PathBuf,
    node: String,
    verb: String,
    resource: String,
    force: bool,
    json: bool,
    size_mb: u64,
}

fn parse_args() -> Result<Args, Failure> {
    let mut state_dir = std::env::var_os("DRBD_STANDIN_STATE_DIR").map(PathBuf::from);
    let mut node = std::env::var("DRBD_STANDIN_NODE").ok();
    let (mut force, mut json, mut size_mb) = (false, false, 64);
    let mut positional = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--state-dir" => state_dir = args.next().map(PathBuf::from),
            "--node" => node = args.next(),
            "--force" => force = true,
            "--json" => json = true,
            "--size-mb" => {
                size_mb = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| fail(1, "--size-mb needs a number"))?
            }
            flag if flag.starts_with("--") => {
                return Err(fail(1, format!("unknown option {flag}")))
            }
            _ => positional.push(arg),
        }
    }
    let usage = "usage: drbd_standin [--state-dir DIR] [--node NAME] VERB RESOURCE (stand-in for tests, not DRBD)";
    let [verb, resource]: [String; 2] = positional.try_into().map_err(|_| fail(1, usage))?;
    if resource.is_empty()
        || !resource
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(fail(1, format!("bad resource name {resource:?}")));
    }
    Ok(Args {
        state_dir: state_dir.ok_or_else(|| {
            fail(
                1,
                "no state dir: pass --state-dir or set DRBD_STANDIN_STATE_DIR",
            )
        })?,
        node: node.ok_or_else(|| fail(1, "no node name: pass --node or set DRBD_STANDIN_NODE"))?,
        verb,
        resource,
        force,
        json,
        size_mb,
    })
}

fn monotonic_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the valid timespec passed.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

struct Site {
    args: Args,
    dir: PathBuf,
}

impl Site {
    fn image(&self) -> PathBuf {
        self.dir.join("disk.img")
    }
    fn node_file(&self, node: &str) -> PathBuf {
        self.dir.join("nodes").join(format!("{node}.json"))
    }
    fn device_link(&self) -> PathBuf {
        self.dir.join(format!("{}.dev", self.args.node))
    }

    fn nodes(&self) -> Result<Vec<(String, NodeState)>, Failure> {
        let mut all = Vec::new();
        let entries = match fs::read_dir(self.dir.join("nodes")) {
            Ok(entries) => entries,
            Err(_) => return Ok(all),
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if let Some(name) = path.file_stem().and_then(|s| s.to_str()) {
                if path.extension().is_some_and(|e| e == "json") {
                    if let Some(state) = self.load(name)? {
                        all.push((name.to_string(), state));
                    }
                }
            }
        }
        all.sort_by_key(|(_, s)| s.node_id);
        Ok(all)
    }

    fn load(&self, node: &str) -> Result<Option<NodeState>, Failure> {
        match fs::read_to_string(self.node_file(node)) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| fail(20, format!("corrupt state for {node}: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(fail(20, format!("cannot read state for {node}: {e}"))),
        }
    }

    fn save(&self, node: &str, state: &NodeState) -> Result<(), Failure> {
        let path = self.node_file(node);
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_string_pretty(state).expect("state serializes");
        fs::write(&tmp, text)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| fail(20, format!("cannot write state for {node}: {e}")))
    }

    fn me(&self) -> Result<NodeState, Failure> {
        self.load(&self.args.node)?.ok_or_else(|| {
            fail(
                10,
                format!(
                    "{}: No such resource (stand-in: run `up` on node {} first)",
                    self.args.resource, self.args.node
                ),
            )
        })
    }

    fn ledger(&self, role: &str, forced: bool, device: Option<&str>) -> Result<(), Failure> {
        let others: Vec<String> = self
            .nodes()?
            .into_iter()
            .filter(|(n, s)| *n != self.args.node && s.role == "Primary")
            .map(|(n, _)| n)
            .collect();
        let line = serde_json::json!({
            "t_ns": monotonic_ns() as u64,
            "node": self.args.node,
            "resource": self.args.resource,
            "role": role,
            "forced": forced,
            "device": device,
            "other_primaries": others,
        });
        let path = self.args.state_dir.join("ledger.jsonl");
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{line}"))
            .map_err(|e| {
                fail(
                    20,
                    format!("cannot append to ledger {}: {e}", path.display()),
                )
            })
    }
}

fn run_tool(program: &str, args: &[&str]) -> Result<String, Failure> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| fail(20, format!("cannot run {program}: {e}")))?;
    if !out.status.success() {
        return Err(fail(
            20,
            format!(
                "{program} {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn connected(a: &NodeState, b: &NodeState) -> bool {
    a.connected && b.connected
}

/// Connected nodes share data at once: an Outdated side next to an UpToDate one catches up.
fn resync(site: &Site) -> Result<(), Failure> {
    let nodes = site.nodes()?;
    for (name, state) in &nodes {
        let has_good_peer = nodes
            .iter()
            .any(|(other, s)| other != name && connected(state, s) && s.disk == "UpToDate");
        if state.disk == "Outdated" && has_good_peer {
            let mut updated = state.clone();
            updated.disk = "UpToDate".into();
            site.save(name, &updated)?;
        }
    }
    Ok(())
}

fn primary(site: &Site) -> Result<(), Failure> {
    let mut me = site.me()?;
    let res = &site.args.resource;
    if me.role == "Primary" {
        return Ok(());
    }
    for (name, peer) in site.nodes()? {
        if name != site.args.node && connected(&me, &peer) && peer.role == "Primary" {
            return Err(fail(
                11,
                format!("{res}: State change failed: (-1) Multiple primaries not allowed by config (peer {name} is Primary)"),
            ));
        }
    }
    if me.disk != "UpToDate" && !site.args.force {
        return Err(fail(
            11,
            format!(
                "{res}: State change failed: (-2) Need access to UpToDate data (local disk is {})",
                me.disk
            ),
        ));
    }
    let image = site.image();
    let device = run_tool("losetup", &["--find", "--show", &image.to_string_lossy()])?;
    let link = site.device_link();
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&device, &link)
        .map_err(|e| fail(20, format!("cannot link {}: {e}", link.display())))?;
    me.role = "Primary".into();
    me.disk = "UpToDate".into();
    me.device = Some(device.clone());
    site.save(&site.args.node, &me)?;
    site.ledger("Primary", site.args.force, Some(&device))
}

fn device_is_open(device: &str) -> bool {
    // An exclusive open fails with EBUSY while anything (a mount, in any namespace) holds it.
    match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(device)
    {
        Ok(_) => false,
        Err(e) => e.raw_os_error() == Some(libc::EBUSY),
    }
}

/// `losetup -d` only marks a device for detaching while something else (a concurrent
/// `losetup` scan, udev) briefly has it open; wait until the kernel really let go of the image.
fn wait_detached(device: &str) -> Result<(), Failure> {
    let name = device.trim_start_matches("/dev/");
    let backing = PathBuf::from(format!("/sys/block/{name}/loop/backing_file"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while backing.exists() {
        if std::time::Instant::now() >= deadline {
            return Err(fail(
                20,
                format!("{device} still attached 10 s after losetup -d"),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Ok(())
}

fn secondary(site: &Site) -> Result<(), Failure> {
    let mut me = site.me()?;
    if me.role != "Primary" {
        return Ok(());
    }
    if let Some(device) = &me.device {
        if device_is_open(device) {
            return Err(fail(
                11,
                format!(
                    "{}: State change failed: (-12) Device is held open by someone",
                    site.args.resource
                ),
            ));
        }
        run_tool("losetup", &["-d", device])?;
        wait_detached(device)?;
    }
    let _ = fs::remove_file(site.device_link());
    me.role = "Secondary".into();
    me.device = None;
    site.save(&site.args.node, &me)?;
    site.ledger("Secondary", false, None)
}

fn status(site: &Site) -> Result<(), Failure> {
    let me = site.me()?;
    let mut connections = Vec::new();
    let mut text = format!(
        "{} role:{}\n  disk:{}\n",
        site.args.resource, me.role, me.disk
    );
    for (name, peer) in site.nodes()? {
        if name == site.args.node {
            continue;
        }
        let up = connected(&me, &peer);
        let state = match (me.connected, up) {
            (false, _) => "StandAlone",
            (true, false) => "Connecting",
            (true, true) => "Connected",
        };
        let role = if up { peer.role.as_str() } else { "Unknown" };
        let disk = if up { peer.disk.as_str() } else { "DUnknown" };
        text.push_str(&format!(
            "  {name} connection:{state} role:{role}\n    peer-disk:{disk}\n"
        ));
        connections.push(serde_json::json!({
            "peer-node-id": peer.node_id,
            "name": name,
            "connection-state": state,
            "congested": false,
            "peer-role": role,
            "ap-in-flight": 0,
            "rs-in-flight": 0,
            "peer_devices": [{
                "volume": 0,
                "replication-state": if up { "Established" } else { "Off" },
                "peer-disk-state": disk,
                "peer-client": false,
                "resync-suspended": "no",
                "out-of-sync": 0,
                "percent-in-sync": 100.0
            }]
        }));
    }
    if site.args.json {
        let doc = serde_json::json!([{
            "name": site.args.resource,
            "node-id": me.node_id,
            "role": me.role,
            "suspended": false,
            "write-ordering": "flush",
            "devices": [{
                "volume": 0,
                "minor": me.node_id,
                "disk-state": me.disk,
                "client": false,
                "quorum": true,
            }],
            "connections": connections,
        }]);
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("status serializes")
        );
    } else {
        print!("{text}");
    }
    Ok(())
}

fn create_md(site: &Site) -> Result<(), Failure> {
    let image = site.image();
    if image.exists() {
        return Err(fail(1, format!("{} already exists", image.display())));
    }
    fs::File::create(&image)
        .and_then(|f| f.set_len(site.args.size_mb * 1024 * 1024))
        .map_err(|e| fail(20, format!("cannot create {}: {e}", image.display())))?;
    run_tool("mkfs.ext4", &["-q", "-F", &image.to_string_lossy()]).map(|_| ())
}

fn up(site: &Site) -> Result<(), Failure> {
    if !site.image().exists() {
        return Err(fail(
            10,
            format!("{}: no image; run create-md first", site.args.resource),
        ));
    }
    if site.load(&site.args.node)?.is_some() {
        return Ok(());
    }
    let node_id = site
        .nodes()?
        .iter()
        .map(|(_, s)| s.node_id + 1)
        .max()
        .unwrap_or(0);
    let state = NodeState {
        node_id,
        role: "Secondary".into(),
        disk: "UpToDate".into(),
        connected: true,
        device: None,
    };
    site.save(&site.args.node, &state)
}

fn set_connected(site: &Site, value: bool) -> Result<(), Failure> {
    let mut me = site.me()?;
    if value && me.role == "Primary" {
        if let Some((name, _)) = site
            .nodes()?
            .into_iter()
            .find(|(n, s)| *n != site.args.node && s.connected && s.role == "Primary")
        {
            return Err(fail(
                10,
                format!(
                    "{}: Split-Brain detected with {name} (both Primary), dropping connection",
                    site.args.resource
                ),
            ));
        }
    }
    me.connected = value;
    site.save(&site.args.node, &me)?;
    resync(site)
}

fn run() -> Result<(), Failure> {
    let args = parse_args()?;
    let dir = args.state_dir.join(&args.resource);
    fs::create_dir_all(dir.join("nodes"))
        .map_err(|e| fail(20, format!("cannot create {}: {e}", dir.display())))?;
    let lock = fs::File::create(dir.join("lock"))
        .map_err(|e| fail(20, format!("cannot open lock: {e}")))?;
    // SAFETY: flock on a valid descriptor; released when the process exits.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(fail(20, "cannot lock the state dir"));
    }
    let site = Site { args, dir };
    match site.args.verb.as_str() {
        "primary" => primary(&site),
        "secondary" => secondary(&site),
        "status" => status(&site),
        "create-md" => create_md(&site),
        "up" => up(&site),
        "down" => {
            secondary(&site)?;
            let _ = fs::remove_file(site.node_file(&site.args.node));
            Ok(())
        }
        "connect" => set_connected(&site, true),
        "disconnect" => set_connected(&site, false),
        "outdate" => {
            let mut me = site.me()?;
            if me.role == "Primary" {
                return Err(fail(
                    11,
                    format!(
                        "{}: State change failed: (-2) cannot outdate a Primary",
                        site.args.resource
                    ),
                ));
            }
            me.disk = "Outdated".into();
            site.save(&site.args.node, &me)
        }
        other => Err(fail(
            1,
            format!("unknown verb {other:?} (stand-in for tests, not DRBD)"),
        )),
    }
}

fn main() {
    if let Err(failure) = run() {
        eprintln!("{}", failure.message);
        std::process::exit(failure.code);
    }
}
