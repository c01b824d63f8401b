//! The virtual IP agent: the address clients use to reach whichever node owns the group.
//!
//! `start` adds the address to the configured interface over netlink (idempotent: an address
//! already there is kept) and then announces it with a burst of gratuitous ARP (see
//! [`garp`] for the frame forms), so clients switch to the new owner at once.
//! `stop` and `fence` remove the address; removing an absent address succeeds. `monitor` asks
//! the kernel whether the address is on the interface.
//!
//! The agent works in the network namespace of the thread that calls it: every action opens its
//! own netlink and packet sockets. In production that is the host's namespace; tests run it on a
//! thread that entered a test host's namespace.
//!
//! Limitations: IPv4 only (IPv6 would need unsolicited neighbour advertisements), one address
//! per agent, and no check that another host already answers for the address (that is what
//! ownership through Raft is for).
//!
//! This folder holds the agent (here) and the two kernel interfaces only it uses: [`netlink`]
//! for the addresses and [`garp`] for the announcements.

pub mod garp;
pub mod netlink;

use crate::resources::agent::{ActionContext, AgentError, Recovery, ResourceAgent, ResourceState};
use crate::resources::vip::garp::PacketSender;
use crate::resources::vip::netlink::{format_mac, NetlinkError};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::time::Duration;

/// Settings of one VIP resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipConfig {
    /// The virtual address with its prefix length, for example `198.18.0.100/24`.
    pub address: String,
    /// The interface that carries it, for example `eth0`.
    pub interface: String,
    /// Rounds of gratuitous ARP after the address is added; each round sends one request-form
    /// and one reply-form frame. 1 to 50.
    #[serde(default = "default_arp_count")]
    pub arp_count: u32,
    /// Milliseconds between two rounds. 1 to 10000.
    #[serde(default = "default_arp_interval_ms")]
    pub arp_interval_ms: u64,
    /// Deadline for one netlink exchange, in milliseconds. 100 to 60000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_arp_count() -> u32 {
    3
}
fn default_arp_interval_ms() -> u64 {
    200
}
fn default_timeout_ms() -> u64 {
    5000
}

/// Longest total burst (first to last round) the config may ask for.
const MAX_BURST_MS: u64 = 30_000;

/// An IPv4 address with its prefix length, as in `198.18.0.100/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipAddress {
    /// The address.
    pub ip: Ipv4Addr,
    /// The prefix length, 1 to 32.
    pub prefix: u8,
}

impl FromStr for VipAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let Some((ip_text, prefix_text)) = text.split_once('/') else {
            return Err(format!(
                "address {text:?} has no prefix length; write it as address/prefix, e.g. 198.18.0.100/24"
            ));
        };
        let ip = match IpAddr::from_str(ip_text) {
            Ok(IpAddr::V4(ip)) => ip,
            Ok(IpAddr::V6(_)) => {
                return Err(format!(
                    "address {text:?} is IPv6; the VIP agent announces IPv4 only"
                ))
            }
            Err(_) => {
                return Err(format!(
                    "address {text:?}: {ip_text:?} is not an IP address"
                ))
            }
        };
        let prefix = match prefix_text.parse::<u8>() {
            Ok(p) if (1..=32).contains(&p) => p,
            _ => {
                return Err(format!(
                    "address {text:?}: prefix length {prefix_text:?} must be a number from 1 to 32"
                ))
            }
        };
        if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() {
            return Err(format!(
                "address {text:?} cannot be a VIP: it is unspecified, loopback, multicast or broadcast"
            ));
        }
        Ok(VipAddress { ip, prefix })
    }
}

/// The VIP agent; see the module docs.
pub struct VipAgent {
    name: String,
    config: VipConfig,
    address: Result<VipAddress, String>,
}

impl VipAgent {
    /// Builds the agent; problems in `config` are reported by `validate` and by each action.
    pub fn new(name: impl Into<String>, config: VipConfig) -> Self {
        let address = config.address.parse();
        VipAgent {
            name: name.into(),
            config,
            address,
        }
    }

    /// The settings this agent was built with.
    pub fn config(&self) -> &VipConfig {
        &self.config
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
    }

    fn error(&self, recovery: Recovery, message: impl Into<String>) -> AgentError {
        AgentError::new(&self.name, recovery, message)
    }

    fn target(&self, recovery: Recovery) -> Result<VipAddress, AgentError> {
        self.address
            .clone()
            .map_err(|why| self.error(recovery, format!("bad config: {why}")))
    }

    /// Sends the configured burst of gratuitous ARP for the VIP again, from the interface's MAC.
    /// The address must be on the interface; use it after a switch port or bridge flapped.
    pub async fn announce(&self, ctx: &ActionContext) -> Result<(), AgentError> {
        let vip = self.target(Recovery::MoveAway)?;
        let link = netlink::link_by_name(&self.config.interface, self.timeout())
            .await
            .map_err(|e| self.netlink_error(ctx, "announce", Recovery::Retry, e))?;
        let Some(mac) = link.mac else {
            return Err(self.error(
                Recovery::MoveAway,
                format!(
                    "interface {} has no Ethernet address; gratuitous ARP needs one",
                    self.config.interface
                ),
            ));
        };
        let sender = PacketSender::open(link.index).map_err(|e| {
            self.logged(
                ctx,
                "announce",
                self.error(
                    Recovery::Retry,
                    format!("cannot open a packet socket for gratuitous ARP: {e}"),
                ),
            )
        })?;
        let rounds = self.config.arp_count.max(1);
        for round in 0..rounds {
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(self.config.arp_interval_ms)).await;
                // This task may have been paused (SIGSTOP, a frozen host) past its lease while
                // it slept, and the guard may have taken the VIP off: announcing an address this
                // node no longer holds would steer clients away from the next owner.
                let present = netlink::address_prefixes(link.index, vip.ip, self.timeout())
                    .await
                    .map_err(|e| self.netlink_error(ctx, "announce", Recovery::Retry, e))?;
                if !present.contains(&vip.prefix) {
                    return Err(self.logged(
                        ctx,
                        "announce",
                        self.error(
                            Recovery::Retry,
                            format!(
                                "the VIP left {} during the gratuitous ARP burst (before round {} of {rounds}); stopped announcing it",
                                self.config.interface,
                                round + 1
                            ),
                        ),
                    ));
                }
            }
            sender.send_round(mac, vip.ip).map_err(|e| {
                self.logged(
                    ctx,
                    "announce",
                    self.error(
                        Recovery::Retry,
                        format!(
                            "gratuitous ARP round {} of {rounds} on {} failed: {e}",
                            round + 1,
                            self.config.interface
                        ),
                    ),
                )
            })?;
        }
        tracing::info!(
            resource = %self.name,
            epoch = ctx.epoch,
            action = "announce",
            address = %vip.ip,
            interface = %self.config.interface,
            mac = %format_mac(&mac),
            rounds,
            "sent gratuitous ARP burst"
        );
        Ok(())
    }

    fn netlink_error(
        &self,
        ctx: &ActionContext,
        action: &'static str,
        recovery: Recovery,
        error: NetlinkError,
    ) -> AgentError {
        let recovery = match (&error, recovery) {
            // A missing interface will not appear by retrying here.
            (NetlinkError::NoSuchInterface(_), Recovery::Retry) => Recovery::MoveAway,
            (_, recovery) => recovery,
        };
        self.logged(ctx, action, self.error(recovery, error.to_string()))
    }

    fn logged(&self, ctx: &ActionContext, action: &'static str, error: AgentError) -> AgentError {
        tracing::warn!(
            resource = %self.name,
            epoch = ctx.epoch,
            action,
            recovery = ?error.recovery,
            reason = %error.message,
            "VIP action failed"
        );
        error
    }

    /// Removes the address; shared by `stop` and `fence`. Absent address or interface: success.
    async fn remove(&self, ctx: &ActionContext, action: &'static str) -> Result<(), AgentError> {
        let vip = self.target(Recovery::Fence)?;
        let link = match netlink::link_by_name(&self.config.interface, self.timeout()).await {
            Ok(link) => link,
            Err(NetlinkError::NoSuchInterface(name)) => {
                tracing::info!(resource = %self.name, epoch = ctx.epoch, action,
                    interface = %name, "interface absent, so the VIP is not held");
                return Ok(());
            }
            Err(e) => return Err(self.netlink_error(ctx, action, Recovery::Fence, e)),
        };
        let removed = netlink::remove_address(link.index, vip.ip, self.timeout())
            .await
            .map_err(|e| self.netlink_error(ctx, action, Recovery::Fence, e))?;
        // Confirm: stop never reports success while the address is still there.
        let left = netlink::address_prefixes(link.index, vip.ip, self.timeout())
            .await
            .map_err(|e| self.netlink_error(ctx, action, Recovery::Fence, e))?;
        if !left.is_empty() {
            return Err(self.logged(
                ctx,
                action,
                self.error(
                    Recovery::Fence,
                    format!(
                        "{} is still on {} after removal; fence this node",
                        vip.ip, self.config.interface
                    ),
                ),
            ));
        }
        tracing::info!(resource = %self.name, epoch = ctx.epoch, action, address = %vip.ip,
            interface = %self.config.interface, removed, "VIP removed");
        Ok(())
    }
}

#[async_trait]
impl ResourceAgent for VipAgent {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "vip"
    }

    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let prefix = format!("{}: ", self.name);
        if let Err(why) = &self.address {
            problems.push(format!("{prefix}{why}"));
        }
        let interface = &self.config.interface;
        if interface.is_empty() || interface.len() > 15 {
            problems.push(format!(
                "{prefix}interface name {interface:?} must be 1 to 15 characters"
            ));
        } else if interface.contains(['/', ':', '\0']) || interface.chars().any(char::is_whitespace)
        {
            problems.push(format!(
                "{prefix}interface name {interface:?} contains '/', ':', a NUL or whitespace"
            ));
        } else if !interface_exists(interface) {
            problems.push(format!(
                "{prefix}interface {interface:?} does not exist in this network namespace"
            ));
        }
        if !(1..=50).contains(&self.config.arp_count) {
            problems.push(format!(
                "{prefix}arp_count {} must be from 1 to 50",
                self.config.arp_count
            ));
        }
        if !(1..=10_000).contains(&self.config.arp_interval_ms) {
            problems.push(format!(
                "{prefix}arp_interval_ms {} must be from 1 to 10000",
                self.config.arp_interval_ms
            ));
        }
        let burst = u64::from(self.config.arp_count.saturating_sub(1))
            .saturating_mul(self.config.arp_interval_ms);
        if burst > MAX_BURST_MS {
            problems.push(format!(
                "{prefix}the gratuitous ARP burst would last {burst} ms (arp_count x arp_interval_ms); keep it under {MAX_BURST_MS} ms"
            ));
        }
        if !(100..=60_000).contains(&self.config.timeout_ms) {
            problems.push(format!(
                "{prefix}timeout_ms {} must be from 100 to 60000",
                self.config.timeout_ms
            ));
        }
        problems
    }

    async fn start(&self, ctx: &ActionContext) -> Result<(), AgentError> {
        let vip = self.target(Recovery::MoveAway)?;
        let link = netlink::link_by_name(&self.config.interface, self.timeout())
            .await
            .map_err(|e| self.netlink_error(ctx, "start", Recovery::Retry, e))?;
        if !link.up {
            return Err(self.logged(
                ctx,
                "start",
                self.error(
                    Recovery::MoveAway,
                    format!("interface {} is down", self.config.interface),
                ),
            ));
        }
        let present = netlink::address_prefixes(link.index, vip.ip, self.timeout())
            .await
            .map_err(|e| self.netlink_error(ctx, "start", Recovery::Retry, e))?;
        if present.contains(&vip.prefix) {
            tracing::info!(resource = %self.name, epoch = ctx.epoch, action = "start",
                address = %vip.ip, "VIP already on the interface");
        } else {
            if !present.is_empty() {
                // Same address with another prefix: take it off so exactly one entry remains.
                netlink::remove_address(link.index, vip.ip, self.timeout())
                    .await
                    .map_err(|e| self.netlink_error(ctx, "start", Recovery::Retry, e))?;
            }
            netlink::add_address(link.index, vip.ip, vip.prefix, self.timeout())
                .await
                .map_err(|e| self.netlink_error(ctx, "start", Recovery::Retry, e))?;
            tracing::info!(resource = %self.name, epoch = ctx.epoch, action = "start",
                address = %vip.ip, prefix = vip.prefix, interface = %self.config.interface,
                "VIP added");
        }
        self.announce(ctx).await?;
        match self.monitor().await {
            ResourceState::Running => Ok(()),
            other => Err(self.logged(
                ctx,
                "start",
                self.error(
                    Recovery::Retry,
                    format!("address added but monitor says {other}"),
                ),
            )),
        }
    }

    async fn stop(&self, ctx: &ActionContext) -> Result<(), AgentError> {
        self.remove(ctx, "stop").await
    }

    async fn monitor(&self) -> ResourceState {
        let vip = match &self.address {
            Ok(vip) => *vip,
            Err(why) => return ResourceState::Failed(format!("bad config: {why}")),
        };
        let link = match netlink::link_by_name(&self.config.interface, self.timeout()).await {
            Ok(link) => link,
            Err(e) => return ResourceState::Failed(e.to_string()),
        };
        let prefixes = match netlink::address_prefixes(link.index, vip.ip, self.timeout()).await {
            Ok(p) => p,
            Err(e) => return ResourceState::Failed(e.to_string()),
        };
        match prefixes.as_slice() {
            [] => ResourceState::Stopped,
            [p] if *p == vip.prefix && link.up => ResourceState::Running,
            [p] if *p == vip.prefix => ResourceState::Failed(format!(
                "{} is on {} but the interface is down",
                vip.ip, self.config.interface
            )),
            other => ResourceState::Failed(format!(
                "{} is on {} with prefix lengths {other:?}, expected only /{}",
                vip.ip, self.config.interface, vip.prefix
            )),
        }
    }

    async fn fence(&self, ctx: &ActionContext) -> Result<(), AgentError> {
        self.remove(ctx, "fence").await
    }
}

/// True when an interface of that name exists in the calling thread's network namespace.
fn interface_exists(name: &str) -> bool {
    let Ok(c_name) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: `c_name` is a valid NUL-terminated string for the duration of the call.
    unsafe { libc::if_nametoindex(c_name.as_ptr()) != 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(address: &str) -> VipConfig {
        VipConfig {
            address: address.to_string(),
            interface: "lo".to_string(),
            arp_count: 3,
            arp_interval_ms: 200,
            timeout_ms: 5000,
        }
    }

    #[test]
    fn parses_address_with_prefix() {
        let vip: VipAddress = "198.18.0.100/24".parse().unwrap();
        assert_eq!(vip.ip, Ipv4Addr::new(198, 18, 0, 100));
        assert_eq!(vip.prefix, 24);
    }

    #[test]
    fn rejects_bad_addresses_with_reasons() {
        for (text, needle) in [
            ("198.18.0.100", "no prefix"),
            ("198.18.0.300/24", "not an IP"),
            ("198.18.0.100/0", "1 to 32"),
            ("198.18.0.100/33", "1 to 32"),
            ("fd00::1/64", "IPv6"),
            ("127.0.0.5/8", "loopback"),
            ("0.0.0.0/24", "unspecified"),
        ] {
            let err = text.parse::<VipAddress>().unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn config_rejects_unknown_fields_and_fills_defaults() {
        let parsed: VipConfig =
            serde_json::from_str(r#"{"address":"198.18.0.100/24","interface":"eth0"}"#).unwrap();
        assert_eq!(parsed.arp_count, 3);
        assert_eq!(parsed.arp_interval_ms, 200);
        let err = serde_json::from_str::<VipConfig>(
            r#"{"address":"198.18.0.100/24","interface":"eth0","arp_cnt":3}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("arp_cnt"), "{err}");
    }

    #[test]
    fn validate_reports_every_problem_on_its_own_line() {
        let agent = VipAgent::new(
            "vip",
            VipConfig {
                address: "198.18.0.100".into(),
                interface: "no-such-if0".into(),
                arp_count: 0,
                arp_interval_ms: 20_000,
                timeout_ms: 5,
            },
        );
        let problems = agent.validate();
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems[0].contains("no prefix"));
        assert!(problems[1].contains("does not exist"));
        assert!(problems[2].contains("arp_count"));
        assert!(problems[3].contains("arp_interval_ms"));
        assert!(problems[4].contains("timeout_ms"));
    }

    #[test]
    fn validate_accepts_a_sane_config_and_flags_long_bursts() {
        assert!(VipAgent::new("vip", config("198.18.0.100/24"))
            .validate()
            .is_empty());
        let mut long = config("198.18.0.100/24");
        long.arp_count = 50;
        long.arp_interval_ms = 1000;
        let problems = VipAgent::new("vip", long).validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("burst"));
    }
}
