//! The DRBD agent's real command lines against the DRBD stand-in (`tests/tools/drbd_standin.rs`):
//! promotion attaches the shared ext4 image, status parses, demotion detaches, and the refusals
//! (connected peer Primary, Outdated disk, device held open) come out as the right recoveries.
//!
//! Needs root, `losetup` and `mkfs.ext4`. Every test's [`Site`] detaches its loop devices on drop.

mod support;

use quorate::command::{RecordingRunner, SystemRunner};
use quorate::resources::agent::{ActionContext, Recovery, ResourceAgent, ResourceState};
use quorate::resources::drbd::status::{ConnectionState, DiskState, DrbdRole};
use quorate::resources::drbd::{DrbdAgent, DrbdConfig, ForcePrimary};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::sync::Arc;
use support::standin::Site;

fn site(test: &str) -> Option<Site> {
    if !support::prereq::ready(test, &["losetup", "mkfs.ext4"]) {
        return None;
    }
    Some(Site::create("r0", &["a", "b"]))
}

fn agent(site: &Site, node: &str) -> (DrbdAgent, RecordingRunner) {
    let recorder = RecordingRunner::new(Arc::new(SystemRunner));
    let wrapper = site.wrapper(node);
    let config = DrbdConfig {
        resource: "r0".into(),
        drbdadm: wrapper.clone(),
        drbdsetup: wrapper,
        force_primary: ForcePrimary::Never,
        command_timeout_ms: 10_000,
        settle_timeout_ms: 2_000,
    };
    (
        DrbdAgent::new("drbd", config, Arc::new(recorder.clone())),
        recorder,
    )
}

fn ctx(node: &str, epoch: u64) -> ActionContext {
    ActionContext {
        epoch,
        node: node.into(),
    }
}

/// The recorded commands without the wrapper path, e.g. `primary r0`.
fn args_of(recorder: &RecordingRunner) -> Vec<String> {
    recorder
        .commands()
        .iter()
        .map(|c| c.args.join(" "))
        .collect()
}

fn roles(site: &Site) -> Vec<(String, String)> {
    site.ledger()
        .iter()
        .map(|e| {
            (
                e["node"].as_str().unwrap().to_string(),
                e["role"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn promote_parse_and_demote_against_the_standin() {
    let Some(site) = site("promote_parse_and_demote") else {
        return;
    };
    let (a, recorder) = agent(&site, "a");
    assert!(a.validate().is_empty(), "{:?}", a.validate());
    assert_eq!(a.monitor().await, ResourceState::Stopped);

    a.start(&ctx("a", 5)).await.expect("start a");
    assert_eq!(a.monitor().await, ResourceState::Running);
    a.start(&ctx("a", 5)).await.expect("start again is a no-op");
    assert_eq!(
        args_of(&recorder),
        [
            "status r0 --json",
            "status r0 --json",
            "primary r0",
            "status r0 --json",
            "status r0 --json",
            "status r0 --json",
        ]
    );

    let status = a.status(None).await.expect("status");
    assert_eq!(status.role, DrbdRole::Primary);
    assert_eq!(status.local_disk(), DiskState::UpToDate);
    assert_eq!(status.peers.len(), 1);
    assert_eq!(status.peers[0].name, "b");
    assert_eq!(status.peers[0].connection, ConnectionState::Connected);
    assert_eq!(status.peers[0].role, DrbdRole::Secondary);
    assert_eq!(status.peers[0].disk(), DiskState::UpToDate);

    // The device link points at a loop device that holds the ext4 image.
    let device = std::fs::canonicalize(site.device_link("a")).expect("device link");
    assert!(std::fs::metadata(&device)
        .unwrap()
        .file_type()
        .is_block_device());
    let mut superblock = [0u8; 2];
    let mut dev = std::fs::File::open(&device).unwrap();
    dev.seek(SeekFrom::Start(1024 + 56)).unwrap();
    dev.read_exact(&mut superblock).unwrap();
    drop(dev);
    assert_eq!(
        superblock,
        [0x53, 0xef],
        "ext4 magic on {}",
        device.display()
    );
    assert_eq!(site.loop_devices().len(), 1);

    // b sees a as connected Primary and will not promote yet: it retries in place, since
    // moving the group away would not help while a still holds it.
    let (b, b_recorder) = agent(&site, "b");
    let b_status = b.status(None).await.unwrap();
    assert_eq!(b_status.peers[0].role, DrbdRole::Primary);
    let err = b.start(&ctx("b", 6)).await.unwrap_err();
    assert_eq!(err.recovery, Recovery::Retry);
    assert!(err.message.contains("a is Primary"), "{err}");
    assert!(!args_of(&b_recorder)
        .iter()
        .any(|c| c.starts_with("primary")));

    a.stop(&ctx("a", 5)).await.expect("stop a");
    assert_eq!(a.monitor().await, ResourceState::Stopped);
    assert!(!site.device_link("a").exists());
    assert!(site.loop_devices().is_empty());
    assert_eq!(
        roles(&site),
        [
            ("a".into(), "Primary".into()),
            ("a".into(), "Secondary".into())
        ]
    );
    let ledger = site.ledger();
    assert!(ledger[1]["t_ns"].as_u64() > ledger[0]["t_ns"].as_u64());
}

#[tokio::test]
async fn standin_refuses_primary_while_the_connected_peer_is_primary() {
    let Some(site) = site("refuses_connected_primary") else {
        return;
    };
    site.ok("a", &["primary", "r0"]);
    // Bypass the agent's own check: the stand-in itself must refuse, as DRBD does.
    let out = site.run("b", &["primary", "r0"]);
    assert_eq!(out.status.code(), Some(11));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Multiple primaries"));
    assert_eq!(roles(&site), [("a".into(), "Primary".into())]);
    site.ok("a", &["secondary", "r0"]);
}

#[tokio::test]
async fn disconnected_dual_primary_is_allowed_and_logged() {
    let Some(site) = site("dual_primary_logged") else {
        return;
    };
    let (a, _) = agent(&site, "a");
    let (b, _) = agent(&site, "b");
    a.start(&ctx("a", 1)).await.expect("start a");
    site.ok("b", &["disconnect", "r0"]);
    let b_view = b.status(None).await.unwrap();
    assert_eq!(b_view.peers[0].connection, ConnectionState::StandAlone);
    assert_eq!(b_view.peers[0].role, DrbdRole::Unknown);
    assert_eq!(b_view.peers[0].disk(), DiskState::DUnknown);

    b.start(&ctx("b", 2))
        .await
        .expect("the stand-in does not prevent it");
    assert_eq!(site.loop_devices().len(), 2);
    let ledger = site.ledger();
    assert_eq!(ledger.len(), 2);
    assert_eq!(ledger[1]["node"], "b");
    assert_eq!(ledger[1]["other_primaries"], serde_json::json!(["a"]));

    // Reconnecting two Primaries is a split brain: refused, they stay apart.
    let out = site.run("b", &["connect", "r0"]);
    assert_eq!(out.status.code(), Some(10));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Split-Brain"));

    b.stop(&ctx("b", 2)).await.expect("stop b");
    a.stop(&ctx("a", 1)).await.expect("stop a");
    assert!(site.loop_devices().is_empty());
}

#[tokio::test]
async fn outdated_disk_is_refused_until_an_explicit_forced_promotion() {
    let Some(site) = site("outdated_refused") else {
        return;
    };
    site.ok("b", &["disconnect", "r0"]);
    site.ok("b", &["outdate", "r0"]);
    let (b, recorder) = agent(&site, "b");
    assert_eq!(
        b.status(None).await.unwrap().local_disk(),
        DiskState::Outdated
    );

    let err = b.start(&ctx("b", 3)).await.unwrap_err();
    assert_eq!(err.recovery, Recovery::MoveAway);
    assert!(err.message.contains("Outdated"), "{err}");
    // One status above, one inside start, and no promotion attempt.
    assert_eq!(args_of(&recorder), ["status r0 --json", "status r0 --json"]);

    let out = site.run("b", &["primary", "r0"]);
    assert_eq!(out.status.code(), Some(11));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Need access to UpToDate data"));
    assert!(site.ledger().is_empty());

    b.force_promote(&ctx("b", 4), "test: operator accepts data loss")
        .await
        .expect("forced promotion");
    assert_eq!(b.monitor().await, ResourceState::Running);
    assert!(args_of(&recorder).contains(&"primary --force r0".to_string()));
    assert_eq!(site.ledger()[0]["forced"], true);
    b.stop(&ctx("b", 4)).await.expect("stop b");
}

#[tokio::test]
async fn reconnecting_resyncs_an_outdated_secondary() {
    let Some(site) = site("reconnect_resyncs") else {
        return;
    };
    site.ok("b", &["disconnect", "r0"]);
    site.ok("b", &["outdate", "r0"]);
    site.ok("b", &["connect", "r0"]);
    let (b, _) = agent(&site, "b");
    let status = b.status(None).await.unwrap();
    assert_eq!(status.local_disk(), DiskState::UpToDate);
    assert_eq!(status.peers[0].connection, ConnectionState::Connected);
}

#[tokio::test]
async fn demotion_while_the_device_is_held_open_asks_for_fencing() {
    let Some(site) = site("held_open_fences") else {
        return;
    };
    let (a, _) = agent(&site, "a");
    a.start(&ctx("a", 8)).await.expect("start a");
    let device = std::fs::canonicalize(site.device_link("a")).unwrap();
    // An exclusive open stands in for a mount: the kernel refuses other exclusive openers.
    let holder = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(&device)
        .expect("exclusive open");
    for result in [a.stop(&ctx("a", 8)).await, a.fence(&ctx("a", 8)).await] {
        let err = result.unwrap_err();
        assert_eq!(err.recovery, Recovery::Fence);
        assert!(err.message.contains("held open"), "{err}");
    }
    assert_eq!(a.monitor().await, ResourceState::Running);
    drop(holder);
    // A child that another test thread was spawning at the time of the exclusive open may hold a
    // copy of the descriptor until its exec closes it, so allow a short grace period.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while let Err(e) = a.fence(&ctx("a", 8)).await {
        assert!(
            std::time::Instant::now() < deadline,
            "fence once released: {e}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(a.monitor().await, ResourceState::Stopped);
    assert!(site.loop_devices().is_empty());
}
