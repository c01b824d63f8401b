//! Re-runs the failover testbed's checkers on a run directory the testbed kept (a failed
//! scenario leaves it under `target/testbed-runs/`, or every one does with
//! `QUORATE_TESTBED_KEEP=1`), so a verdict can be examined, and a checker changed and tried
//! again, without rebuilding the testbed:
//!
//! ```text
//! cargo run --example testbed_recheck -- target/testbed-runs/owner_isolated-12345
//! ```
//!
//! It prints each checker's verdict with its violations and notes, and exits 0 when every
//! checker passes, 1 when any finds a violation, 2 when the directory cannot be read. The
//! checkers are the test suite's own files, included by path, so the verdict is the one the
//! scenario computed at its end (except `e2fsck` and the teardown checks, which need the live
//! testbed).

#[allow(dead_code)]
#[path = "../tests/support/testbed/arp_checks.rs"]
mod arp_checks;
#[allow(dead_code)]
#[path = "../tests/support/testbed/checks.rs"]
mod checks;
#[allow(dead_code)]
#[path = "../tests/support/testbed/saved.rs"]
mod saved;

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir] = args.as_slice() else {
        eprintln!(
            "usage: cargo run --example testbed_recheck -- <run directory>\n\
             (a directory under target/testbed-runs/ that a testbed scenario kept)"
        );
        return ExitCode::from(2);
    };
    match saved::recheck(Path::new(dir)) {
        Ok(verdicts) => {
            print!("{}", saved::render(&verdicts));
            let failed = verdicts.iter().filter(|v| !v.violations.is_empty()).count();
            if failed == 0 {
                println!("all {} checkers pass", verdicts.len());
                ExitCode::SUCCESS
            } else {
                println!("{failed} of {} checkers found violations", verdicts.len());
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("testbed_recheck: {e}");
            ExitCode::from(2)
        }
    }
}
