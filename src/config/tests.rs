//! Config parsing and validation, on inline TOML.

use std::path::Path;

use super::{Config, ConfigError};

const GOOD: &str = r#"
cluster = "prod"
node_id = 2
data_dir = "data/node2"

[[members]]
id = 1
name = "node1"
address = "10.0.0.1:7100"
role = "management"

[[members]]
id = 2
name = "node2"
address = "10.0.0.2:7100"
role = "management"

[[members]]
id = 3
name = "witness"
address = "10.0.0.3:7100"
role = "witness"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/quorate/node.toml"))
}

#[test]
fn good_config_validates_and_resolves_relative_paths() {
    let mut config = parse(GOOD).unwrap();
    config.resolve_paths();
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    assert_eq!(config.data_dir, Path::new("/etc/quorate/data/node2"));
    assert_eq!(config.listen_address(), "10.0.0.2:7100");
    assert_eq!(config.me().unwrap().name, "node2");
    assert_eq!(config.raft.election_timeout_max_ms, 500);
}

#[test]
fn unknown_field_is_a_parse_error_naming_the_field() {
    let text = GOOD.replace("node_id = 2", "node_id = 2\nnode_idd = 3");
    let err = parse(&text).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }));
    assert!(err.to_string().contains("node_idd"), "{err}");
}

#[test]
fn wrong_type_is_a_parse_error_with_a_line() {
    let text = GOOD.replace("node_id = 2", "node_id = \"two\"");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("line"), "{err}");
}

#[test]
fn the_old_lease_bound_is_horizon_by_default_and_a_bad_value_names_the_choices() {
    assert_eq!(
        parse(GOOD).unwrap().lease.old_lease_bound,
        super::OldLeaseBound::Horizon
    );
    let election = format!("{GOOD}\n[lease]\nold_lease_bound = \"election\"\n");
    assert_eq!(
        parse(&election).unwrap().lease.old_lease_bound,
        super::OldLeaseBound::Election
    );
    let bad = format!("{GOOD}\n[lease]\nold_lease_bound = \"quorum\"\n");
    let err = parse(&bad).unwrap_err().to_string();
    assert!(
        err.contains("quorum") && err.contains("horizon") && err.contains("election"),
        "{err}"
    );
}

#[test]
fn the_watchdog_timeout_needs_a_device_a_sane_value_and_a_faster_pet() {
    let problems = |guard: &str| {
        let mut config = parse(&format!("{GOOD}\n[guard]\n{guard}\n")).unwrap();
        config.resolve_paths();
        config.validate()
    };
    assert!(problems("watchdog_device = \"/dev/watchdog\"\nwatchdog_timeout_s = 5").is_empty());
    let alone = problems("watchdog_timeout_s = 5");
    assert!(
        alone.iter().any(|p| p.contains("watchdog_device is not")),
        "{alone:?}"
    );
    let zero = problems("watchdog_device = \"/dev/watchdog\"\nwatchdog_timeout_s = 0");
    assert!(
        zero.iter().any(|p| p.contains("between 1 and 3600")),
        "{zero:?}"
    );
    let slow = problems(
        "watchdog_device = \"/dev/watchdog\"\nwatchdog_timeout_s = 1\npet_interval_ms = 600",
    );
    assert!(slow.iter().any(|p| p.contains("at most half")), "{slow:?}");
}

#[test]
fn every_semantic_problem_is_reported_at_once() {
    let text = GOOD
        .replace("cluster = \"prod\"", "cluster = \"bad name!\"")
        .replace("node_id = 2", "node_id = 7")
        .replace("10.0.0.3:7100", "10.0.0.3")
        .replace("name = \"node1\"", "name = \"node2\"")
        + "\n[raft]\nheartbeat_interval_ms = 100\nelection_timeout_min_ms = 200\nelection_timeout_max_ms = 150\n";
    let config = parse(&text).unwrap();
    let problems = config.validate();
    let all = problems.join("\n");
    assert!(all.contains("cluster = \"bad name!\""), "{all}");
    assert!(all.contains("node_id 7 is not the id"), "{all}");
    assert!(all.contains("address \"10.0.0.3\""), "{all}");
    assert!(
        all.contains("name \"node2\" appears more than once"),
        "{all}"
    );
    assert!(all.contains("election_timeout_min_ms = 200"), "{all}");
    assert!(all.contains("election_timeout_max_ms = 150"), "{all}");
    assert_eq!(problems.len(), 6, "{all}");
}

#[test]
fn membership_must_be_two_management_nodes_and_a_witness() {
    let text = GOOD.replace("role = \"witness\"", "role = \"management\"");
    let problems = parse(&text).unwrap().validate();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("found 3 management and 0 witness")),
        "{problems:?}"
    );
}

#[test]
fn bad_ports_and_hosts_are_named() {
    for (address, expect) in [
        ("host:0", "port \"0\""),
        ("host:99999", "port \"99999\""),
        (":7100", "host is empty"),
        ("::1:7100", "brackets"),
    ] {
        let text = GOOD.replace("10.0.0.1:7100", address);
        let problems = parse(&text).unwrap().validate().join("\n");
        assert!(problems.contains(expect), "{address}: {problems}");
    }
    let text = GOOD.replace("10.0.0.1:7100", "[::1]:7100");
    assert!(parse(&text).unwrap().validate().is_empty());
}

#[test]
fn binary_role_must_match_the_node() {
    let config = parse(GOOD).unwrap();
    assert!(config
        .expect_role(crate::consensus::types::Role::Management)
        .is_ok());
    let err = config
        .expect_role(crate::consensus::types::Role::Witness)
        .unwrap_err();
    assert!(err.to_string().contains("has role management"), "{err}");
}

#[test]
fn missing_file_names_the_file() {
    let err = Config::load(Path::new("/nonexistent/quorate.toml")).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/quorate.toml"),
        "{err}"
    );
}
