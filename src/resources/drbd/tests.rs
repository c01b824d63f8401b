//! Unit tests of the DRBD agent: the promotion rules on parsed statuses, and the agent's exact
//! command lines and error recoveries against a scripted in-process runner.

use super::*;
use crate::command::RecordingRunner;
use std::sync::Mutex;

fn status(role: &str, disk: &str, peers: &[(&str, &str, &str)]) -> DrbdStatus {
    let connections: Vec<String> = peers
        .iter()
        .enumerate()
        .map(|(i, (connection, peer_role, peer_disk))| {
            format!(
                r#"{{"peer-node-id":{},"name":"p{i}","connection-state":"{connection}","peer-role":"{peer_role}",
                   "peer_devices":[{{"volume":0,"replication-state":"Off","peer-disk-state":"{peer_disk}"}}]}}"#,
                i + 1
            )
        })
        .collect();
    let json = format!(
        r#"[{{"name":"r0","node-id":0,"role":"{role}","devices":[{{"volume":0,"minor":0,"disk-state":"{disk}"}}],"connections":[{}]}}]"#,
        connections.join(",")
    );
    parse_status(&json, "r0").unwrap()
}

#[test]
fn plan_promotes_an_up_to_date_secondary() {
    let s = status(
        "Secondary",
        "UpToDate",
        &[("Connected", "Secondary", "UpToDate")],
    );
    assert_eq!(
        plan_promotion(&s, ForcePrimary::Never),
        PromotionPlan::Promote
    );
}

#[test]
fn plan_is_idempotent_for_a_serving_primary() {
    let s = status("Primary", "UpToDate", &[]);
    assert_eq!(
        plan_promotion(&s, ForcePrimary::Never),
        PromotionPlan::AlreadyPrimary
    );
}

#[test]
fn plan_refuses_outdated_and_inconsistent_disks_even_with_force_policy() {
    for disk in ["Outdated", "Inconsistent"] {
        let s = status("Secondary", disk, &[("StandAlone", "Unknown", "DUnknown")]);
        match plan_promotion(&s, ForcePrimary::WhenPeerOutdated) {
            PromotionPlan::Refuse(why) => assert!(why.contains(disk), "{why}"),
            other => panic!("{disk}: {other:?}"),
        }
    }
}

#[test]
fn plan_refuses_while_a_connected_peer_is_primary() {
    let s = status(
        "Secondary",
        "UpToDate",
        &[("Connected", "Primary", "UpToDate")],
    );
    match plan_promotion(&s, ForcePrimary::WhenPeerOutdated) {
        PromotionPlan::WaitForPeer(why) => assert!(why.contains("p0 is Primary"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn plan_forces_a_consistent_disk_only_when_policy_and_peers_allow() {
    let outdated_peer = status(
        "Secondary",
        "Consistent",
        &[("Connecting", "Unknown", "Outdated")],
    );
    assert!(matches!(
        plan_promotion(&outdated_peer, ForcePrimary::WhenPeerOutdated),
        PromotionPlan::PromoteForced(_)
    ));
    assert!(matches!(
        plan_promotion(&outdated_peer, ForcePrimary::Never),
        PromotionPlan::Refuse(_)
    ));
    let unknown_peer = status(
        "Secondary",
        "Consistent",
        &[("Connecting", "Unknown", "DUnknown")],
    );
    match plan_promotion(&unknown_peer, ForcePrimary::WhenPeerOutdated) {
        PromotionPlan::Refuse(why) => assert!(why.contains("p0: DUnknown"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn plan_refuses_a_primary_without_good_data() {
    let s = status(
        "Primary",
        "Diskless",
        &[("Connected", "Secondary", "UpToDate")],
    );
    assert!(matches!(
        plan_promotion(&s, ForcePrimary::Never),
        PromotionPlan::Refuse(_)
    ));
}

/// A scripted DRBD for one node: answers status from its fields and flips them on commands.
struct ScriptedDrbd {
    state: Mutex<(String, String)>,
    refuse_secondary: bool,
}

#[async_trait]
impl CommandRunner for ScriptedDrbd {
    async fn run(
        &self,
        program: &str,
        args: &[String],
        _: Duration,
    ) -> Result<CommandOutput, RunError> {
        if program.ends_with("missing") {
            return Err(RunError::Spawn {
                program: program.into(),
                message: "No such file or directory".into(),
            });
        }
        let mut state = self.state.lock().unwrap();
        let ok = |stdout: String| CommandOutput {
            code: Some(0),
            stdout,
            stderr: String::new(),
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Ok(match args.as_slice() {
            ["status", "r0", "--json"] => ok(format!(
                r#"[{{"name":"r0","node-id":0,"role":"{}","devices":[{{"volume":0,"minor":0,"disk-state":"{}"}}],"connections":[]}}]"#,
                state.0, state.1
            )),
            ["status", other, "--json"] => CommandOutput {
                code: Some(10),
                stdout: String::new(),
                stderr: format!("{other}: No such resource\n"),
            },
            ["primary", "r0"] | ["primary", "--force", "r0"] => {
                state.0 = "Primary".into();
                state.1 = "UpToDate".into();
                ok(String::new())
            }
            ["secondary", "r0"] if self.refuse_secondary => CommandOutput {
                code: Some(11),
                stdout: String::new(),
                stderr: "r0: State change failed: (-12) Device is held open by someone\n".into(),
            },
            ["secondary", "r0"] => {
                state.0 = "Secondary".into();
                ok(String::new())
            }
            other => panic!("unexpected command {program} {other:?}"),
        })
    }
}

fn agent(role: &str, disk: &str, refuse_secondary: bool) -> (DrbdAgent, RecordingRunner) {
    let scripted = ScriptedDrbd {
        state: Mutex::new((role.into(), disk.into())),
        refuse_secondary,
    };
    let recorder = RecordingRunner::new(Arc::new(scripted));
    let config = DrbdConfig {
        resource: "r0".into(),
        drbdadm: "/sbin/drbdadm".into(),
        drbdsetup: "/sbin/drbdsetup".into(),
        force_primary: ForcePrimary::Never,
        command_timeout_ms: 1000,
        settle_timeout_ms: 1000,
    };
    (
        DrbdAgent::new("drbd", config, Arc::new(recorder.clone())),
        recorder,
    )
}

fn lines(recorder: &RecordingRunner) -> Vec<String> {
    recorder
        .commands()
        .iter()
        .map(|c| format!("{} {}", c.program, c.args.join(" ")))
        .collect()
}

fn ctx() -> ActionContext {
    ActionContext {
        epoch: 7,
        node: "a".into(),
    }
}

#[tokio::test]
async fn start_runs_exact_commands_and_is_idempotent() {
    let (agent, recorder) = agent("Secondary", "UpToDate", false);
    assert_eq!(agent.monitor().await, ResourceState::Stopped);
    agent.start(&ctx()).await.unwrap();
    assert_eq!(agent.monitor().await, ResourceState::Running);
    agent.start(&ctx()).await.unwrap();
    assert_eq!(
        lines(&recorder),
        [
            "/sbin/drbdsetup status r0 --json",
            "/sbin/drbdsetup status r0 --json",
            "/sbin/drbdadm primary r0",
            "/sbin/drbdsetup status r0 --json",
            "/sbin/drbdsetup status r0 --json",
            "/sbin/drbdsetup status r0 --json",
        ]
    );
}

#[tokio::test]
async fn start_refuses_an_outdated_disk_without_touching_drbd() {
    let (agent, recorder) = agent("Secondary", "Outdated", false);
    let err = agent.start(&ctx()).await.unwrap_err();
    assert_eq!(err.recovery, Recovery::MoveAway);
    assert!(err.message.contains("Outdated"), "{err}");
    assert_eq!(lines(&recorder), ["/sbin/drbdsetup status r0 --json"]);
}

#[tokio::test]
async fn failed_demotion_asks_for_fencing() {
    let (agent, _) = agent("Primary", "UpToDate", true);
    for result in [agent.stop(&ctx()).await, agent.fence(&ctx()).await] {
        let err = result.unwrap_err();
        assert_eq!(err.recovery, Recovery::Fence);
        assert!(err.message.contains("held open"), "{err}");
    }
    assert_eq!(agent.monitor().await, ResourceState::Running);
}

#[tokio::test]
async fn stop_demotes_and_then_is_a_no_op() {
    let (agent, recorder) = agent("Primary", "UpToDate", false);
    agent.stop(&ctx()).await.unwrap();
    agent.stop(&ctx()).await.unwrap();
    assert_eq!(agent.monitor().await, ResourceState::Stopped);
    assert_eq!(
        lines(&recorder)[..4],
        [
            "/sbin/drbdsetup status r0 --json",
            "/sbin/drbdadm secondary r0",
            "/sbin/drbdsetup status r0 --json",
            "/sbin/drbdsetup status r0 --json",
        ]
    );
}

#[tokio::test]
async fn monitor_fails_on_a_primary_with_bad_disk_and_on_missing_tools() {
    let (agent, _) = agent("Primary", "Inconsistent", false);
    assert!(
        matches!(agent.monitor().await, ResourceState::Failed(s) if s.contains("Inconsistent"))
    );
    let (mut agent, _) = self::agent("Secondary", "UpToDate", false);
    agent.config.drbdsetup = "/nowhere/missing".into();
    assert!(matches!(agent.monitor().await, ResourceState::Failed(s) if s.contains("cannot run")));
    let err = agent.start(&ctx()).await.unwrap_err();
    assert_eq!(err.recovery, Recovery::MoveAway);
}

#[tokio::test]
async fn a_resource_that_is_not_up_is_not_primary() {
    let (mut agent, _) = agent("Secondary", "UpToDate", false);
    agent.config.resource = "r9".into();
    agent.stop(&ctx()).await.unwrap();
    assert!(matches!(agent.monitor().await, ResourceState::Failed(s) if s.contains("not up")));
}

#[test]
fn config_parses_policy_and_rejects_unknown_fields() {
    let c: DrbdConfig =
        serde_json::from_str(r#"{"resource":"r0","force_primary":"when_peer_outdated"}"#).unwrap();
    assert_eq!(c.force_primary, ForcePrimary::WhenPeerOutdated);
    assert_eq!(c.drbdadm, "/usr/sbin/drbdadm");
    assert!(serde_json::from_str::<DrbdConfig>(r#"{"resource":"r0","force":"always"}"#).is_err());
    assert!(
        serde_json::from_str::<DrbdConfig>(r#"{"resource":"r0","force_primary":"always"}"#)
            .is_err()
    );
}

#[test]
fn validate_lists_each_problem() {
    let config = DrbdConfig {
        resource: "-r 0".into(),
        drbdadm: "drbdadm".into(),
        drbdsetup: "/nonexistent/drbdsetup".into(),
        force_primary: ForcePrimary::Never,
        command_timeout_ms: 5,
        settle_timeout_ms: 1_000_000,
    };
    let problems =
        DrbdAgent::new("drbd", config, Arc::new(crate::command::SystemRunner)).validate();
    assert_eq!(problems.len(), 5, "{problems:#?}");
    assert!(problems[0].contains("resource"));
    assert!(problems[1].contains("absolute"));
    assert!(problems[2].contains("cannot be used"));
    assert!(problems[3].contains("command_timeout_ms"));
    assert!(problems[4].contains("settle_timeout_ms"));
}
