//! Tests that need root, namespaces or loop devices must not pass silently where those are
//! missing: under CI (the `CI` variable set) a missing prerequisite fails the test; elsewhere the
//! test is skipped with the reason printed.

use std::path::Path;

/// Checks every prerequisite; `Err` lists what is missing.
pub fn check(programs: &[&str]) -> Result<(), String> {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (run the tests as root)".to_string());
    }
    for program in programs {
        let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .any(|dir| Path::new(dir).join(program).exists());
        if !found {
            missing.push(format!(
                "the `{program}` command (apt-get install {})",
                package_of(program)
            ));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join("; "))
    }
}

fn package_of(program: &str) -> &'static str {
    match program {
        "ip" | "bridge" => "iproute2",
        "arping" => "iputils-arping",
        "losetup" => "mount",
        "mkfs.ext4" => "e2fsprogs",
        _ => "the package that provides it",
    }
}

/// Returns true when the test may run; false (after printing why) when it should be skipped.
/// Panics under CI when something is missing.
pub fn ready(test: &str, programs: &[&str]) -> bool {
    match check(programs) {
        Ok(()) => true,
        Err(missing) if std::env::var_os("CI").is_some() => {
            panic!("{test}: prerequisites missing under CI: {missing}")
        }
        Err(missing) => {
            eprintln!("SKIPPED {test}: missing {missing}");
            false
        }
    }
}
