//! kill -9 in the middle of a stream of appends loses nothing the store acknowledged.
//!
//! The test re-executes its own binary as a child that saves a vote, then appends entries in
//! a loop and prints each index once `append` returned, i.e. after the flush callback fired.
//! The parent SIGKILLs it after some hundreds of acknowledgements, reopens the store, and
//! checks that every acknowledged entry, the vote and the last acknowledged commit index are
//! there. It repeats on the same store, so each round also recovers from the previous crash.

mod support;
use support::store as common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{entry, log_id, runtime};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{EntryPayload, RaftLogReader, Vote};

const DIR_ENV: &str = "QUORATE_TEST_CRASH_DIR";
const TERM_ENV: &str = "QUORATE_TEST_CRASH_TERM";
/// How long a forgotten child keeps appending before it stops by itself.
const CHILD_LIFETIME: Duration = Duration::from_secs(120);

/// What a child acknowledged before it was killed.
#[derive(Debug, Default)]
struct Acks {
    vote_term: Option<u64>,
    last_index: Option<u64>,
    committed: Option<u64>,
    count: usize,
}

impl Acks {
    fn read_line(&mut self, line: &str) {
        // libtest may print the test's name on the same line before the child's output.
        let words: Vec<&str> = line.split_whitespace().collect();
        for pair in words.windows(2) {
            let value = pair[1].parse::<u64>().ok();
            match pair[0] {
                "VOTE" => self.vote_term = value,
                "ACK" => {
                    self.last_index = value;
                    self.count += 1;
                }
                "COMMITTED" => self.committed = value,
                _ => {}
            }
        }
    }
}

/// Kills the child when dropped, so a failing parent leaves no process behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("raft");
    let exe = std::env::current_exe().expect("current exe");

    for round in 1..=4u64 {
        let wanted = 200 + 97 * round as usize;
        let child = Command::new(&exe)
            .args([
                "--exact",
                "child_appends_until_killed",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_ENV, &dir)
            .env(TERM_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the appending child");
        let mut child = KillOnDrop(child);
        let mut stdout = BufReader::new(child.0.stdout.take().expect("child stdout"));

        let mut acks = Acks::default();
        let mut line = String::new();
        while acks.count < wanted {
            line.clear();
            let read = stdout.read_line(&mut line).expect("read child stdout");
            if read == 0 {
                let mut stderr = String::new();
                let _ = child
                    .0
                    .stderr
                    .take()
                    .map(|mut e| e.read_to_string(&mut stderr));
                panic!(
                    "round {round}: the child ended after {} acks:\n{stderr}",
                    acks.count
                );
            }
            acks.read_line(&line);
        }
        child.0.kill().expect("SIGKILL the child");
        child.0.wait().expect("reap the child");
        // What the child printed before it died was acknowledged too.
        let mut rest = String::new();
        stdout
            .read_to_string(&mut rest)
            .expect("read the rest of stdout");
        rest.lines().for_each(|l| acks.read_line(l));

        check_store(&dir, round, &acks);
    }
}

/// Reopens the store and checks everything `acks` says was acknowledged.
fn check_store(dir: &Path, round: u64, acks: &Acks) {
    assert_eq!(
        acks.vote_term,
        Some(round),
        "round {round}: the child did not acknowledge its vote"
    );
    let last = acks.last_index.expect("acknowledged entries");
    runtime().block_on(async {
        let (mut log, _sm) =
            common::open(dir).unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
        assert_eq!(
            log.read_vote().await.expect("read vote"),
            Some(Vote::new_committed(round, 1)),
            "round {round}"
        );

        let state = log.get_log_state().await.expect("log state");
        let stored_last = state.last_log_id.map(|id| id.index);
        assert!(
            stored_last >= Some(last),
            "round {round}: acked up to {last}, store ends at {stored_last:?}"
        );

        let entries = log
            .try_get_log_entries(1..=last)
            .await
            .expect("read acknowledged entries");
        assert_eq!(
            entries.len() as u64,
            last,
            "round {round}: entries missing below {last}"
        );
        for (e, index) in entries.iter().zip(1..) {
            assert_eq!(e.log_id.index, index, "round {round}");
            match &e.payload {
                EntryPayload::Normal(request) => {
                    assert_eq!(request, &common::request(index), "round {round}")
                }
                other => panic!("round {round}: entry {index} holds {other:?}"),
            }
        }

        if let Some(committed) = acks.committed {
            let stored = log
                .read_committed()
                .await
                .expect("read committed")
                .map(|c| c.index);
            assert!(
                stored >= Some(committed),
                "round {round}: committed {committed} acked, store has {stored:?}"
            );
        }
        println!(
            "round {round}: {} acks up to index {last}, all present after kill -9",
            acks.count
        );
    });
}

/// Helper process of `acknowledged_writes_survive_kill_9`: appends until killed.
#[test]
#[ignore = "helper process for acknowledged_writes_survive_kill_9"]
fn child_appends_until_killed() {
    let dir = std::env::var_os(DIR_ENV).expect("run by acknowledged_writes_survive_kill_9");
    let term: u64 = std::env::var(TERM_ENV)
        .expect("term")
        .parse()
        .expect("numeric term");
    runtime().block_on(async {
        let (mut log, _sm) = common::open(Path::new(&dir)).expect("open the store");
        log.save_vote(&Vote::new_committed(term, 1))
            .await
            .expect("save vote");
        println!("VOTE {term}");

        let mut next = log
            .get_log_state()
            .await
            .expect("log state")
            .last_log_id
            .map_or(1, |id| id.index + 1);
        let deadline = Instant::now() + CHILD_LIFETIME;
        while Instant::now() < deadline {
            // Batches of one to three entries, like a leader's appends.
            let last = next + next % 3;
            log.blocking_append((next..=last).map(|i| entry(term, i)))
                .await
                .expect("append");
            println!("ACK {last}");
            if last % 50 < 3 {
                log.save_committed(Some(log_id(term, last)))
                    .await
                    .expect("save committed");
                println!("COMMITTED {last}");
            }
            next = last + 1;
        }
    });
}
