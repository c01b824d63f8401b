//! `check-config FILE`: validates a node config without starting anything.

use std::path::Path;
use std::process::ExitCode;

use super::EXIT_NEGATIVE;
use crate::config::Config;

/// Prints "ok" and a summary, or every problem one per line (exit 1).
pub fn run(file: &Path) -> ExitCode {
    match Config::load(file) {
        Ok(config) => {
            let me = config
                .me()
                .map(|m| format!("{} ({})", m.name, m.role))
                .unwrap_or_default();
            println!(
                "{}: ok: cluster {:?}, this node {}, {} members",
                file.display(),
                config.cluster,
                me,
                config.members.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let problems = e.problems();
            eprintln!("{}: {} problem(s):", file.display(), problems.len());
            for problem in problems {
                eprintln!("  - {problem}");
            }
            ExitCode::from(EXIT_NEGATIVE)
        }
    }
}
