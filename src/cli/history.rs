//! `quoratectl history`: the bounded record of ownership changes and admin actions.

use std::process::ExitCode;

use super::fail;
use super::table::Table;
use crate::rpc::admin::AdminClient;

/// Prints the history, oldest first, as a table or JSON lines.
pub async fn history(client: &mut AdminClient, json: bool) -> ExitCode {
    let lines = match client.history().await {
        Ok(lines) => lines,
        Err(e) => return fail(e),
    };
    if json {
        for line in &lines {
            match serde_json::to_string(line) {
                Ok(text) => println!("{text}"),
                Err(e) => return fail(e),
            }
        }
        return ExitCode::SUCCESS;
    }
    let mut table = Table::new(&["INDEX", "TIME", "WHAT", "WHY", "BY"]);
    for line in lines {
        table.row(vec![
            line.index.to_string(),
            utc(line.at_unix_ms),
            line.what,
            line.reason,
            line.requested_by,
        ]);
    }
    print!("{}", table.render());
    ExitCode::SUCCESS
}

/// RFC 3339 UTC time with milliseconds, for milliseconds since the Unix epoch.
fn utc(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "-".into();
    }
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_renders_known_instants() {
        assert_eq!(utc(0), "-");
        assert_eq!(utc(1_000), "1970-01-01T00:00:01.000Z");
        assert_eq!(utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
    }
}
