//! A small copy of the failover testbed (docs/TESTBED.md) for agent tests: a switch namespace with a
//! bridge (no IP, no uplink) and one veth per host namespace, on 198.18.0.0/24 only.
//!
//! Names carry the test process id and a tag, so parallel tests and runs never collide, and the
//! [`Testbed`]'s `Drop` deletes every namespace it made (which removes the veths and the bridge),
//! even when the test panics. Code runs "on a host" by entering its namespace from a dedicated
//! thread with `setns` and driving a current-thread tokio runtime there.

use std::future::Future;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::thread::JoinHandle;

/// One host of the testbed.
#[derive(Clone, Debug)]
pub struct Host {
    /// The network namespace's name.
    pub ns: String,
    /// Its address on the test segment.
    pub ip: &'static str,
    /// The MAC its `eth0` is given.
    pub mac: [u8; 6],
}

/// The switch plus hosts; everything is removed on drop.
pub struct Testbed {
    /// The switch namespace (bridge `br0`, ports `p_<host>`).
    pub switch: String,
    /// The hosts, in the order they were asked for.
    pub hosts: Vec<Host>,
    made: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Testbed {
    /// Builds the switch and the hosts `(short name, address, last MAC byte)`.
    pub fn create(tag: &str, hosts: &[(&str, &'static str, u8)]) -> Result<Testbed, String> {
        let prefix = format!("q{}{tag}", std::process::id());
        let mut bed = Testbed {
            switch: format!("{prefix}sw"),
            hosts: Vec::new(),
            made: Vec::new(),
        };
        let switch = bed.switch.clone();
        ip(&["netns", "add", &switch])?;
        bed.made.push(switch.clone());
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        for (name, address, last) in hosts {
            let ns = format!("{prefix}{name}");
            ip(&["netns", "add", &ns])?;
            bed.made.push(ns.clone());
            let port = format!("p_{name}");
            ip(&[
                "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ])?;
            ip(&["-n", &switch, "link", "set", &port, "master", "br0", "up"])?;
            let mac = [0x02, 0, 0, 0, 0, *last];
            let mac_text = mac
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":");
            ip(&["-n", &ns, "link", "set", "eth0", "address", &mac_text])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            bed.hosts.push(Host {
                ns,
                ip: address,
                mac,
            });
        }
        Ok(bed)
    }

    /// The host with that short name.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.ns.ends_with(name))
            .unwrap_or_else(|| panic!("no host {name} in the testbed"))
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// Moves the calling thread into the named network namespace.
fn enter(ns: &str) -> Result<(), String> {
    let file = std::fs::File::open(format!("/run/netns/{ns}"))
        .map_err(|e| format!("cannot open namespace {ns}: {e}"))?;
    // SAFETY: setns on a valid namespace descriptor; affects only this thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "setns into {ns} failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Starts a thread inside namespace `ns` that runs `body` on a current-thread runtime.
pub fn spawn_in<T, F, Fut>(ns: &str, body: F) -> JoinHandle<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter(&ns).unwrap_or_else(|e| panic!("{e}"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
        runtime.block_on(body())
    })
}

/// Waits for a thread started by [`spawn_in`], passing its panic on.
pub fn join<T>(handle: JoinHandle<T>) -> T {
    match handle.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Runs `body` inside namespace `ns` and returns its result.
pub fn run_in<T, F, Fut>(ns: &str, body: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    join(spawn_in(ns, body))
}

/// Runs a command inside namespace `ns` (through `ip netns exec`) and returns its stdout.
pub fn exec_in(ns: &str, program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program} in {ns}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{program} {} in {ns} failed ({}): {stdout}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
