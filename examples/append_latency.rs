//! Measures how long the store takes to make one small entry durable: `append` of a single
//! entry until its flush callback fired, and `save_vote`. For comparison it also times sled's
//! own insert + flush (no fsync) and a bare write + fdatasync on a plain file.
//!
//! `cargo run --release --example append_latency [DIR] [COUNT]`; DIR defaults to a temporary
//! directory under the system temp dir, which should be on the disk you care about.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, EntryPayload, LogId, Vote};
use quorate::consensus::state::{Command, Request};
use quorate::consensus::store::{self, StoreIdentity};
use quorate::consensus::types::TypeConfig;

fn main() {
    let mut args = std::env::args().skip(1);
    let base = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let count: u64 = args.next().and_then(|c| c.parse().ok()).unwrap_or(2000);
    let tmp = tempfile::tempdir_in(&base).expect("a temporary directory in DIR");
    println!("store in {}, {count} samples each", tmp.path().display());

    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let (append, vote) = rt.block_on(async {
        let identity = StoreIdentity {
            cluster: "bench".into(),
            node_id: 1,
        };
        let (mut log, _sm) =
            store::open(&tmp.path().join("raft"), &identity).expect("open the store");
        let mut append = Vec::new();
        for index in 1..=count {
            let entry = openraft::Entry::<TypeConfig> {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
                payload: EntryPayload::Normal(Request {
                    command: Command::Noop,
                    requested_by: "node1".into(),
                    reason: "latency sample".into(),
                    at_unix_ms: 1_700_000_000_000,
                }),
            };
            let start = Instant::now();
            log.blocking_append([entry]).await.expect("append");
            append.push(start.elapsed());
        }
        let mut vote = Vec::new();
        for term in 1..=count.min(500) {
            let start = Instant::now();
            log.save_vote(&Vote::new_committed(term, 1))
                .await
                .expect("save vote");
            vote.push(start.elapsed());
        }
        (append, vote)
    });
    report("append 1 entry + flush callback", append);
    report("save_vote", vote);

    let db = sled::open(tmp.path().join("plain-sled")).expect("sled");
    let mut sled_only = Vec::new();
    for index in 1..=count {
        let start = Instant::now();
        db.insert(index.to_be_bytes(), vec![7u8; 160])
            .expect("insert");
        db.flush().expect("flush");
        sled_only.push(start.elapsed());
    }
    report(
        "baseline: sled insert + flush (sync_file_range only)",
        sled_only,
    );

    let mut file = std::fs::File::create(tmp.path().join("plain-file")).expect("file");
    let mut raw = Vec::new();
    for _ in 1..=count {
        let start = Instant::now();
        file.write_all(&[7u8; 160]).expect("write");
        file.sync_data().expect("fdatasync");
        raw.push(start.elapsed());
    }
    report("baseline: 160-byte append + fdatasync", raw);
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{what:<55} p50 {:>7.0} us   p99 {:>7.0} us   max {:>7.0} us",
        us(at(0.50)),
        us(at(0.99)),
        us(samples[samples.len() - 1])
    );
}
