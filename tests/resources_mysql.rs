//! The MySQL agent against a real MariaDB server whose datadir lives on an ext4 image on a loop
//! device (needs root and the `mariadb-server` package), plus the systemd mode against a scripted
//! command runner.

mod support;
use support::loopdev as common;

use async_trait::async_trait;
use common::{free_port, init_tracing, loop_prerequisites, require, which, LoopImage};
use mysql_async::prelude::Queryable;
use quorate::command::{CommandOutput, CommandRunner, RunError, SystemRunner};
use quorate::resources::agent::{ActionContext, Recovery, ResourceAgent, ResourceState};
use quorate::resources::filesystem::{FilesystemAgent, FilesystemConfig};
use quorate::resources::group::ResourceGroup;
use quorate::resources::mysql::config::MysqlConfig;
use quorate::resources::mysql::MysqlAgent;
use quorate::resources::procs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const USER: &str = "quorate";
const PASSWORD: &str = "s3cret-pw";

fn ctx(epoch: u64) -> ActionContext {
    ActionContext {
        epoch,
        node: "node-a".into(),
    }
}

/// A MariaDB datadir on a mounted loop image, with a user for the probe. Dropping it kills
/// every process using the mount, unmounts, detaches and deletes everything.
struct Mariadb {
    image: LoopImage,
    dir: tempfile::TempDir,
    mount_point: PathBuf,
    datadir: PathBuf,
    port: u16,
}

impl Mariadb {
    fn setup() -> Option<Mariadb> {
        init_tracing();
        let ready = loop_prerequisites();
        if !require(
            ready.is_ok(),
            &format!("MariaDB on a loop device: {ready:?}"),
        ) {
            return None;
        }
        for tool in ["mariadbd", "mariadb-install-db"] {
            if !require(
                which(tool).is_some(),
                &format!("{tool} not found: apt-get install mariadb-server"),
            ) {
                return None;
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let image = LoopImage::create(dir.path(), 512).expect("loop image");
        let mount_point = dir.path().join("mnt");
        image.mount(&mount_point).unwrap();
        let datadir = mount_point.join("data");
        let users = dir.path().join("users.sql");
        let mut sql = String::from("FLUSH PRIVILEGES;\n");
        for host in ["localhost", "127.0.0.1"] {
            sql.push_str(&format!(
                "CREATE USER '{USER}'@'{host}' IDENTIFIED BY '{PASSWORD}';\nGRANT ALL ON *.* TO '{USER}'@'{host}';\n"
            ));
        }
        std::fs::write(&users, sql).unwrap();
        // Each server gets its own tmpdir: mariadbd deletes every `#sql*` file in its tmpdir at
        // start-up, so servers sharing /tmp delete each other's temporary tables.
        let tmpdir = dir.path().join("tmp");
        std::fs::create_dir(&tmpdir).unwrap();
        let install_db = which("mariadb-install-db").unwrap();
        common::run(
            &install_db.to_string_lossy(),
            &[
                "--no-defaults",
                &format!("--datadir={}", datadir.display()),
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                &format!("--extra-file={}", users.display()),
                &format!("--tmpdir={}", tmpdir.display()),
            ],
        )
        .expect("mariadb-install-db");
        let fixture = Mariadb {
            image,
            mount_point,
            datadir,
            port: free_port(),
            dir,
        };
        Some(fixture)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, extra: &[&str]) -> Vec<String> {
        let mut argv = vec![
            which("mariadbd").unwrap().to_string_lossy().into_owned(),
            "--no-defaults".into(),
            format!("--datadir={}", self.datadir.display()),
            format!("--socket={}", self.path("mysqld.sock").display()),
            format!("--port={}", self.port),
            "--bind-address=127.0.0.1".into(),
            "--user=root".into(),
            format!("--pid-file={}", self.datadir.join("mariadbd.pid").display()),
            format!("--tmpdir={}", self.path("tmp").display()),
            "--skip-name-resolve".into(),
            "--innodb-buffer-pool-size=32M".into(),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        argv
    }

    fn config(&self, extra: &[&str]) -> MysqlConfig {
        MysqlConfig {
            command: self.command(extra),
            pid_file: Some(self.path("quorate-mysql.pid")),
            log_file: Some(self.path("mysqld.log")),
            host: Some("127.0.0.1".into()),
            port: Some(self.port),
            user: USER.into(),
            password: PASSWORD.into(),
            start_timeout_ms: 60_000,
            stop_timeout_ms: 30_000,
            kill_timeout_ms: 5_000,
            monitor_timeout_ms: 2_000,
            ..MysqlConfig::default()
        }
    }

    fn agent(&self, config: MysqlConfig) -> MysqlAgent {
        MysqlAgent::new("mysql", config, Arc::new(SystemRunner))
    }

    /// Processes that hold anything on the data disk.
    fn holders(&self) -> Vec<procs::Holder> {
        procs::find_holders(&self.mount_point.canonicalize().unwrap(), None)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("mysqld.log")).unwrap_or_default()
    }

    async fn connect(&self) -> mysql_async::Conn {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.port)
            .user(Some(USER))
            .pass(Some(PASSWORD))
            .prefer_socket(false);
        mysql_async::Conn::new(opts)
            .await
            .expect("connect to mariadbd")
    }

    fn tracked_pid(&self) -> i32 {
        let text = std::fs::read_to_string(self.path("quorate-mysql.pid")).unwrap();
        let record: serde_json::Value = serde_json::from_str(&text).unwrap();
        record["pid"].as_i64().unwrap() as i32
    }
}

/// Polls `monitor` until `done` holds for its answer or `limit` passes; returns every distinct
/// state seen, in order.
async fn monitor_until(
    agent: &MysqlAgent,
    limit: Duration,
    done: impl Fn(&ResourceState) -> bool,
) -> Vec<ResourceState> {
    let deadline = Instant::now() + limit;
    let mut seen: Vec<ResourceState> = Vec::new();
    loop {
        let state = agent.monitor().await;
        if seen.last() != Some(&state) {
            seen.push(state.clone());
        }
        if done(&state) || Instant::now() >= deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn start_select_idempotent_crash_recovery_and_graceful_stop() {
    let Some(db) = Mariadb::setup() else { return };
    let mysql = db.agent(db.config(&[]));
    assert!(mysql.validate().is_empty(), "{:?}", mysql.validate());
    assert_eq!(mysql.monitor().await, ResourceState::Stopped);

    let began = Instant::now();
    mysql.start(&ctx(1)).await.unwrap();
    let first_start = began.elapsed();
    assert_eq!(mysql.monitor().await, ResourceState::Running);
    let pid = db.tracked_pid();

    let mut conn = db.connect().await;
    conn.query_drop("CREATE DATABASE q; CREATE TABLE q.t (n INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO q.t VALUES (1), (2)")
        .await
        .unwrap();
    let sum: Option<i64> = conn.query_first("SELECT SUM(n) FROM q.t").await.unwrap();
    assert_eq!(sum, Some(3));
    conn.disconnect().await.unwrap();

    let began = Instant::now();
    mysql.start(&ctx(1)).await.unwrap();
    let second_start = began.elapsed();
    assert_eq!(
        db.tracked_pid(),
        pid,
        "a second start must not launch another mysqld"
    );

    // A committed row, then kill -9: the next start must recover it.
    let mut conn = db.connect().await;
    conn.query_drop("INSERT INTO q.t VALUES (40)")
        .await
        .unwrap();
    drop(conn);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // While it dies the probe may see a reset connection ("runs but does not answer"); once it
    // is gone the monitor must say so, and never running.
    let gone = |s: &ResourceState| matches!(s, ResourceState::Failed(why) if why.contains("gone without a stop"));
    let seen = monitor_until(&mysql, Duration::from_secs(10), gone).await;
    assert!(seen.last().is_some_and(gone), "after kill -9: {seen:?}");
    assert!(
        !seen.contains(&ResourceState::Running),
        "after kill -9: {seen:?}"
    );
    let began = Instant::now();
    mysql.start(&ctx(1)).await.unwrap();
    let recovery_start = began.elapsed();
    assert_ne!(db.tracked_pid(), pid);
    assert_eq!(mysql.monitor().await, ResourceState::Running);
    let mut conn = db.connect().await;
    let sum: Option<i64> = conn.query_first("SELECT SUM(n) FROM q.t").await.unwrap();
    assert_eq!(sum, Some(43), "the committed row survived the crash");
    conn.disconnect().await.unwrap();

    let began = Instant::now();
    mysql.stop(&ctx(1)).await.unwrap();
    let stop = began.elapsed();
    assert_eq!(mysql.monitor().await, ResourceState::Stopped);
    assert!(db.holders().is_empty(), "left behind: {:?}", db.holders());
    assert!(!db.path("quorate-mysql.pid").exists());
    let log = db.log();
    assert_eq!(
        log.matches("Normal shutdown").count(),
        1,
        "one graceful shutdown, after the crash:\n{log}"
    );
    mysql.stop(&ctx(1)).await.unwrap();

    println!("MEASURE mysql first start to ready: {first_start:?}");
    println!("MEASURE mysql start when already running: {second_start:?}");
    println!("MEASURE mysql start after kill -9 (crash recovery) to ready: {recovery_start:?}");
    println!("MEASURE mysql graceful stop: {stop:?}");
}

#[tokio::test]
async fn fence_kills_at_once_and_a_restarted_agent_finds_its_mysqld() {
    let Some(db) = Mariadb::setup() else { return };
    let mysql = db.agent(db.config(&[]));
    mysql.start(&ctx(2)).await.unwrap();
    let pid = db.tracked_pid();

    // A new agent (as after a quorate restart) has no child handle, only the pid file.
    let again = db.agent(db.config(&[]));
    assert_eq!(again.monitor().await, ResourceState::Running);
    again.start(&ctx(2)).await.unwrap();
    assert_eq!(db.tracked_pid(), pid);

    let began = Instant::now();
    again.fence(&ctx(2)).await.unwrap();
    let fence = began.elapsed();
    assert!(
        procs::identify(pid).is_none(),
        "mysqld {pid} still runs after fence"
    );
    assert_eq!(again.monitor().await, ResourceState::Stopped);
    assert!(db.holders().is_empty());
    assert_eq!(
        db.log().matches("Normal shutdown").count(),
        0,
        "fence is no graceful shutdown"
    );
    println!("MEASURE mysql fence (SIGKILL) until gone: {fence:?}");
}

/// A frozen mysqld (SIGSTOP) is alive but does not answer: monitor says failed within its
/// timeout, and stop, finding SIGTERM unanswered past the deadline, kills it.
#[tokio::test]
async fn a_frozen_mysqld_is_failed_and_killed_after_the_stop_deadline() {
    let Some(db) = Mariadb::setup() else { return };
    let mut config = db.config(&[]);
    config.stop_timeout_ms = 1_000;
    config.monitor_timeout_ms = 1_000;
    let mysql = db.agent(config);
    mysql.start(&ctx(1)).await.unwrap();
    let pid = nix::unistd::Pid::from_raw(db.tracked_pid());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();

    let began = Instant::now();
    let state = mysql.monitor().await;
    let monitor = began.elapsed();
    match state {
        ResourceState::Failed(why) => assert!(why.contains("runs but does not answer"), "{why}"),
        other => panic!("a frozen mysqld is failed, got {other}"),
    }
    assert!(monitor < Duration::from_secs(3), "monitor took {monitor:?}");

    let began = Instant::now();
    mysql.stop(&ctx(1)).await.unwrap();
    let stop = began.elapsed();
    assert!(
        stop >= Duration::from_secs(1),
        "SIGKILL came before the deadline: {stop:?}"
    );
    assert!(procs::identify(pid.as_raw()).is_none());
    assert!(db.holders().is_empty());
    assert_eq!(db.log().matches("Normal shutdown").count(), 0);
    println!("MEASURE mysql monitor of a frozen mysqld (1 s timeout): {monitor:?}; stop with 1 s deadline: {stop:?}");
}

#[tokio::test]
async fn configurations_that_cannot_start_fail_clearly_and_leave_nothing_behind() {
    let Some(db) = Mariadb::setup() else { return };

    let bad_option = db.agent(db.config(&["--no-such-option=1"]));
    let err = bad_option.start(&ctx(1)).await.unwrap_err();
    assert_eq!(err.recovery, Recovery::MoveAway);
    assert!(err.message.contains("exited during start"), "{err}");
    assert!(
        err.message.contains("no-such-option"),
        "the log tail names the option: {err}"
    );
    assert_eq!(bad_option.monitor().await, ResourceState::Stopped);
    assert!(!db.path("quorate-mysql.pid").exists());
    assert!(db.holders().is_empty(), "left behind: {:?}", db.holders());

    let taken = std::net::TcpListener::bind(("127.0.0.1", db.port)).unwrap();
    let port_taken = db.agent(db.config(&[]));
    let err = port_taken.start(&ctx(1)).await.unwrap_err();
    assert!(err.message.contains("Address already in use"), "{err}");
    assert!(db.holders().is_empty(), "left behind: {:?}", db.holders());
    drop(taken);

    let mut config = db.config(&[]);
    config.password = "wrong".into();
    let wrong_password = db.agent(config);
    let began = Instant::now();
    let err = wrong_password.start(&ctx(1)).await.unwrap_err();
    assert!(err.message.contains("refuses user quorate"), "{err}");
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "a refused login fails fast"
    );
    assert!(db.holders().is_empty(), "left behind: {:?}", db.holders());

    // With the bad configs gone, the good one starts on the same datadir.
    let good = db.agent(db.config(&[]));
    good.start(&ctx(1)).await.unwrap();
    // A second server on the same endpoint is refused while the first answers.
    let mut other = db.config(&[]);
    other.pid_file = Some(db.path("other.pid"));
    let err = db.agent(other).start(&ctx(1)).await.unwrap_err();
    assert!(
        err.message.contains("did not start already answers"),
        "{err}"
    );
    good.stop(&ctx(1)).await.unwrap();
    assert!(db.holders().is_empty());
}

#[tokio::test]
async fn a_group_of_filesystem_and_mysql_starts_and_stops_in_order() {
    let Some(db) = Mariadb::setup() else { return };
    let device = db.image.device.clone();
    let mount_point = db.mount_point.clone();
    nix::mount::umount2(&mount_point, nix::mount::MntFlags::empty()).unwrap();
    let fs = FilesystemAgent::new(
        "fs",
        FilesystemConfig {
            device,
            mount_point: mount_point.clone(),
            fstype: "ext4".into(),
            options: "noatime".into(),
            term_grace_ms: 1_000,
            kill_grace_ms: 2_000,
            monitor_timeout_ms: 2_000,
            umount_attempts: 3,
        },
    );
    let mysql = db.agent(db.config(&[]));
    let state = db.path("state");
    std::fs::create_dir(&state).unwrap();
    let group = ResourceGroup::new("db", vec![Arc::new(fs), Arc::new(mysql)], &state).unwrap();
    assert!(group.validate().is_empty(), "{:?}", group.validate());
    let began = Instant::now();
    group.start(&ctx(4)).await.unwrap();
    let start = began.elapsed();
    let states: Vec<ResourceState> = group
        .monitor_all()
        .await
        .into_iter()
        .map(|s| s.state)
        .collect();
    assert_eq!(states, vec![ResourceState::Running; 2]);
    let began = Instant::now();
    group.stop(&ctx(4)).await.unwrap();
    let stop = began.elapsed();
    assert!(db.image.mounts().is_empty());
    assert!(procs::find_holders(Path::new(&db.datadir), None).is_empty());
    println!("MEASURE group (mount + mysql) start: {start:?}, stop: {stop:?}");
}

/// Answers `systemctl` like a unit that is in `state`, and records the calls.
struct FakeSystemctl {
    state: Mutex<String>,
    stop_hangs: bool,
    seen: Mutex<Vec<Vec<String>>>,
}

#[async_trait]
impl CommandRunner for FakeSystemctl {
    async fn run(
        &self,
        program: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<CommandOutput, RunError> {
        assert_eq!(program, "systemctl");
        self.seen.lock().unwrap().push(args.to_vec());
        let ok = |stdout: String| {
            Ok(CommandOutput {
                code: Some(0),
                stdout,
                stderr: String::new(),
            })
        };
        match args[0].as_str() {
            "is-active" => ok(self.state.lock().unwrap().clone()),
            "stop" if self.stop_hangs => Err(RunError::Timeout {
                program: program.into(),
                timeout,
            }),
            "stop" => {
                *self.state.lock().unwrap() = "inactive".into();
                ok(String::new())
            }
            _ => ok(String::new()),
        }
    }
}

fn systemd_agent(state: &str, stop_hangs: bool) -> (MysqlAgent, Arc<FakeSystemctl>) {
    let fake = Arc::new(FakeSystemctl {
        state: Mutex::new(state.into()),
        stop_hangs,
        seen: Mutex::new(Vec::new()),
    });
    let config = MysqlConfig {
        systemd_unit: Some("mariadb.service".into()),
        socket: Some("/nonexistent/quorate/mysqld.sock".into()),
        user: USER.into(),
        monitor_timeout_ms: 500,
        ..MysqlConfig::default()
    };
    (MysqlAgent::new("mysql", config, fake.clone()), fake)
}

#[tokio::test]
async fn systemd_mode_runs_the_right_commands() {
    init_tracing();
    let (agent, fake) = systemd_agent("active", false);
    agent.fence(&ctx(9)).await.unwrap();
    let seen = fake.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            vec!["kill", "--signal=SIGKILL", "mariadb.service"],
            vec!["stop", "mariadb.service"],
            vec!["is-active", "mariadb.service"],
        ]
    );
    assert_eq!(agent.monitor().await, ResourceState::Stopped);

    let (agent, _) = systemd_agent("failed", false);
    assert!(matches!(agent.monitor().await, ResourceState::Failed(why) if why.contains("failed")));
    let (agent, _) = systemd_agent("active", false);
    match agent.monitor().await {
        ResourceState::Failed(why) => assert!(why.contains("active but nothing answers"), "{why}"),
        other => panic!("an active unit that does not answer is failed, got {other}"),
    }

    let (agent, fake) = systemd_agent("active", true);
    let err = agent.stop(&ctx(9)).await.unwrap_err();
    assert_eq!(err.recovery, Recovery::Fence);
    assert!(err.message.contains("still active"), "{err}");
    let programs: Vec<String> = fake
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|a| a[0].clone())
        .collect();
    assert_eq!(programs, ["stop", "kill", "stop", "is-active"]);
}

#[test]
fn validate_reports_every_problem_and_unknown_fields_are_refused() {
    let agent = MysqlAgent::new(
        "mysql",
        MysqlConfig {
            command: vec!["/nonexistent/mysqld".into()],
            systemd_unit: Some("x".into()),
            socket: Some("relative.sock".into()),
            host: Some("127.0.0.1".into()),
            user: " ".into(),
            kill_timeout_ms: 0,
            start_timeout_ms: 1_000,
            monitor_timeout_ms: 1_000,
            ..MysqlConfig::default()
        },
        Arc::new(SystemRunner),
    );
    let problems = agent.validate();
    let text = problems.join("\n");
    for needle in [
        "not both",
        "socket or host/port",
        "user is empty",
        "kill_timeout_ms",
        "shorter than start_timeout_ms",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    let command_only = MysqlAgent::new(
        "mysql",
        MysqlConfig {
            command: vec!["/nonexistent/mysqld".into()],
            pid_file: Some("run/q.pid".into()),
            log_file: Some("/var/log/q.log".into()),
            host: Some("127.0.0.1".into()),
            port: Some(0),
            user: "u".into(),
            start_timeout_ms: 10_000,
            stop_timeout_ms: 1,
            kill_timeout_ms: 1,
            monitor_timeout_ms: 1,
            ..MysqlConfig::default()
        },
        Arc::new(SystemRunner),
    );
    let text = command_only.validate().join("\n");
    for needle in [
        "/nonexistent/mysqld not found",
        "pid_file \"run/q.pid\" is not an absolute path",
        "port 0",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    let err = serde_json::from_str::<MysqlConfig>(r#"{"user":"u","passwd":"x"}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field `passwd`"), "{err}");
}
