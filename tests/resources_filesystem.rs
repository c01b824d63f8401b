//! The filesystem agent on a real ext4 image attached to a loop device (needs root).

mod support;
use support::loopdev as common;

use common::{init_tracing, loop_prerequisites, require, LoopImage};
use quorate::resources::agent::{ActionContext, Recovery, ResourceAgent, ResourceState};
use quorate::resources::filesystem::{FilesystemAgent, FilesystemConfig};
use quorate::resources::procs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn ctx() -> ActionContext {
    ActionContext {
        epoch: 3,
        node: "node-a".into(),
    }
}

fn agent(image: &LoopImage, mount_point: &Path) -> FilesystemAgent {
    FilesystemAgent::new(
        "fs",
        FilesystemConfig {
            device: image.device.clone(),
            mount_point: mount_point.to_path_buf(),
            fstype: "ext4".into(),
            options: "noatime,errors=remount-ro".into(),
            term_grace_ms: 500,
            kill_grace_ms: 2_000,
            monitor_timeout_ms: 2_000,
            umount_attempts: 3,
        },
    )
}

/// Sets up the image or says why the test cannot run.
fn setup(dir: &Path) -> Option<LoopImage> {
    init_tracing();
    let ready = loop_prerequisites();
    if !require(ready.is_ok(), &format!("loop-device ext4 test: {ready:?}")) {
        return None;
    }
    Some(LoopImage::create(dir, 64).expect("create the loop image"))
}

/// Kills and reaps a child when dropped, so a failed test leaves no process behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls until the child exits or the deadline passes; returns its status.
fn wait_exit(child: &mut Reaped, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn mounts_monitors_is_idempotent_and_unmounts() {
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = setup(dir.path()) else {
        return;
    };
    let mount_point = dir.path().join("mnt");
    let fs = agent(&image, &mount_point);
    assert!(fs.validate().is_empty(), "{:?}", fs.validate());
    assert_eq!(fs.monitor().await, ResourceState::Stopped);

    fs.start(&ctx()).await.unwrap();
    assert_eq!(fs.monitor().await, ResourceState::Running);
    let canonical = mount_point.canonicalize().unwrap();
    assert_eq!(image.mounts(), vec![canonical.clone()]);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mountinfo
        .lines()
        .find(|l| l.contains(&format!(" {} ", canonical.display())))
        .unwrap();
    assert!(
        line.contains("noatime") && line.contains("errors=remount-ro"),
        "{line}"
    );

    fs.start(&ctx()).await.unwrap();
    assert_eq!(
        image.mounts().len(),
        1,
        "a second start must not mount again"
    );

    std::fs::write(mount_point.join("data"), b"kept").unwrap();
    fs.stop(&ctx()).await.unwrap();
    assert_eq!(fs.monitor().await, ResourceState::Stopped);
    assert!(image.mounts().is_empty());
    assert!(!mount_point.join("data").exists());
    fs.stop(&ctx()).await.unwrap();

    fs.start(&ctx()).await.unwrap();
    assert_eq!(std::fs::read(mount_point.join("data")).unwrap(), b"kept");
    fs.fence(&ctx()).await.unwrap();
    assert!(image.mounts().is_empty());
}

#[tokio::test]
async fn a_read_only_or_foreign_mount_is_failed_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = setup(dir.path()) else {
        return;
    };
    let mount_point = dir.path().join("mnt");
    let fs = agent(&image, &mount_point);
    std::fs::create_dir(&mount_point).unwrap();
    nix::mount::mount(
        Some(&image.device),
        &mount_point,
        Some("ext4"),
        nix::mount::MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .unwrap();
    match fs.monitor().await {
        ResourceState::Failed(why) => assert!(why.contains("read-only"), "{why}"),
        other => panic!("expected failed, got {other}"),
    }
    let err = fs.start(&ctx()).await.unwrap_err();
    assert_eq!(err.recovery, Recovery::MoveAway);
    fs.stop(&ctx()).await.unwrap();
    assert!(image.mounts().is_empty());

    // A tmpfs at our mount point is somebody else's: failed, and start does not mount over it.
    nix::mount::mount(
        Some("tmpfs"),
        &mount_point,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let state = fs.monitor().await;
    let _ = nix::mount::umount2(&mount_point, nix::mount::MntFlags::empty());
    match state {
        ResourceState::Failed(why) => assert!(why.contains("tmpfs"), "{why}"),
        other => panic!("expected failed, got {other}"),
    }
}

#[tokio::test]
async fn holders_are_terminated_then_killed_and_the_unmount_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = setup(dir.path()) else {
        return;
    };
    let mount_point = dir.path().join("mnt");
    let fs = agent(&image, &mount_point);
    fs.start(&ctx()).await.unwrap();

    let mut polite = Reaped(
        Command::new("sleep")
            .arg("600")
            .current_dir(&mount_point)
            .spawn()
            .unwrap(),
    );
    // Ignores SIGTERM (the ignore survives exec), keeps a file open: needs SIGKILL.
    let mut stubborn = Reaped(
        Command::new("sh")
            .arg("-c")
            .arg("trap '' TERM; exec 3>held; exec sleep 600")
            .current_dir(&mount_point)
            .spawn()
            .unwrap(),
    );
    let stubborn_pid = stubborn.0.id() as i32;
    let held_open = Instant::now() + Duration::from_secs(5);
    while procs::stat(stubborn_pid).map(|s| s.comm) != Some("sleep".to_string()) {
        assert!(
            Instant::now() < held_open,
            "the stubborn holder never exec'd sleep"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let began = Instant::now();
    fs.stop(&ctx()).await.unwrap();
    let took = began.elapsed();
    assert_eq!(fs.monitor().await, ResourceState::Stopped);
    assert!(image.mounts().is_empty());
    let polite_status = wait_exit(&mut polite, Duration::from_secs(5)).expect("sleep was ended");
    let stubborn_status = wait_exit(&mut stubborn, Duration::from_secs(5)).expect("sh was ended");
    assert_eq!(polite_status.signal(), Some(libc_sigterm()));
    assert_eq!(stubborn_status.signal(), Some(libc_sigkill()));
    println!(
        "MEASURE filesystem stop with 2 holders (one ignoring SIGTERM, 500 ms grace): {took:?}"
    );
}

fn libc_sigterm() -> i32 {
    nix::sys::signal::Signal::SIGTERM as i32
}

fn libc_sigkill() -> i32 {
    nix::sys::signal::Signal::SIGKILL as i32
}

/// A writer blocked on a frozen filesystem sleeps uninterruptibly: even SIGKILL waits until the
/// filesystem thaws. The unmount must then fail with "fence", never pretend.
#[tokio::test]
async fn a_holder_that_cannot_be_killed_makes_stop_ask_for_fencing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(image) = setup(dir.path()) else {
        return;
    };
    if !require(
        common::which("fsfreeze").is_some(),
        "fsfreeze (util-linux) not found",
    ) {
        return;
    }
    let mount_point = dir.path().join("mnt");
    let mut config = agent(&image, &mount_point).config().clone();
    config.term_grace_ms = 100;
    config.kill_grace_ms = 300;
    config.umount_attempts = 2;
    let fs = FilesystemAgent::new("fs", config);
    fs.start(&ctx()).await.unwrap();
    let canonical = mount_point.canonicalize().unwrap();
    common::run("fsfreeze", &["--freeze", &canonical.to_string_lossy()]).unwrap();
    let mut writer = Reaped(
        Command::new("sh")
            .arg("-c")
            .arg("echo x > blocked")
            .current_dir(&mount_point)
            .spawn()
            .unwrap(),
    );
    let pid = writer.0.id() as i32;
    let stuck_by = Instant::now() + Duration::from_secs(5);
    while procs::stat(pid).map(|s| s.state) != Some('D') {
        assert!(
            Instant::now() < stuck_by,
            "the writer never blocked on the frozen filesystem"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let err = fs.stop(&ctx()).await.unwrap_err();
    assert_eq!(err.recovery, Recovery::Fence);
    assert!(err.message.contains("still mounted"), "{err}");
    assert!(err.message.contains(&format!("pid {pid}")), "{err}");
    assert_eq!(
        fs.monitor().await,
        ResourceState::Running,
        "it was not detached"
    );

    common::run("fsfreeze", &["--unfreeze", &canonical.to_string_lossy()]).unwrap();
    let status = wait_exit(&mut writer, Duration::from_secs(5)).expect("the writer dies on thaw");
    // Both signals were pending while it slept; the first fatal one dequeued ends it.
    assert!(status.signal().is_some(), "{status:?}");
    fs.stop(&ctx()).await.unwrap();
    assert!(image.mounts().is_empty());
}
