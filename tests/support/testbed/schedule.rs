//! The soak's fault schedule, drawn from one seed so that a failed soak can be replayed
//! exactly: the same seed gives the same faults, in the same order, with the same gaps and hold
//! times (the faults themselves then take whatever time the cluster needs).
//!
//! The generator is a SplitMix64 of our own rather than a library RNG, so a seed printed today
//! means the same schedule after any dependency upgrade. Fault kinds are dealt from a shuffled
//! deck of all seven: every kind comes once before any comes twice, so even a short soak mixes
//! them and a long one covers each kind evenly. A consequence the soak relies on: between two
//! faults that change the owner's epoch there are at most two mysqld kills (the deck's other
//! epoch-keeping fault is the witness loss), so a kill is always restarted in place and never
//! uses up the agent's recoveries (`group.max_restarts_in_place` is 2).

use std::fmt;

/// A small, stable pseudo-random generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `low..=high` (the tiny modulo bias does not matter here).
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high, "empty range {low}..={high}");
        low + self.next_u64() % (high - low + 1)
    }
}

/// One kind of fault the soak injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// The owner's host loses power; after the failover (plus the hold) it is powered on again.
    PowerCycle,
    /// The owner is cut off from every host; healed after the failover (plus the hold).
    Isolate,
    /// Only the arbiters' port is cut between the owner and the other arbiters; healed after
    /// the failover (plus the hold).
    RaftCut,
    /// The owner's agent gets SIGSTOP; SIGCONT once its guard dropped the VIP (plus the hold).
    AgentPause,
    /// The owner's mysqld is SIGKILLed; the owner restarts it in place.
    MysqldKill,
    /// A planned switchover to the other management node.
    Switchover,
    /// The witness loses power for the hold time, then comes back; nothing moves.
    WitnessLoss,
}

impl FaultKind {
    /// Every kind, in a fixed order (the deck before shuffling).
    pub const ALL: [FaultKind; 7] = [
        FaultKind::PowerCycle,
        FaultKind::Isolate,
        FaultKind::RaftCut,
        FaultKind::AgentPause,
        FaultKind::MysqldKill,
        FaultKind::Switchover,
        FaultKind::WitnessLoss,
    ];

    /// The range the hold time of this kind is drawn from, in milliseconds.
    pub fn hold_range_ms(self) -> (u64, u64) {
        match self {
            FaultKind::PowerCycle | FaultKind::Isolate | FaultKind::RaftCut => (0, 3_000),
            FaultKind::AgentPause => (500, 3_000),
            FaultKind::WitnessLoss => (3_000, 6_000),
            FaultKind::MysqldKill | FaultKind::Switchover => (0, 0),
        }
    }

    /// Whether this fault gives the group a new epoch (it moves, or is fenced and re-granted).
    pub fn renews_epoch(self) -> bool {
        !matches!(self, FaultKind::MysqldKill | FaultKind::WitnessLoss)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            FaultKind::PowerCycle => "owner power-off, then power-on",
            FaultKind::Isolate => "owner isolated, then healed",
            FaultKind::RaftCut => "Raft port of the owner cut, then healed",
            FaultKind::AgentPause => "owner's agent SIGSTOP past the lease, then SIGCONT",
            FaultKind::MysqldKill => "owner's mysqld killed",
            FaultKind::Switchover => "planned switchover",
            FaultKind::WitnessLoss => "witness powered off, then on",
        };
        f.write_str(text)
    }
}

/// One planned fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedFault {
    /// When to inject it, in milliseconds after the soak's first fault (the first is at 0).
    /// A fault whose predecessor is still settling waits for it.
    pub at_ms: u64,
    /// What to inject.
    pub kind: FaultKind,
    /// How long the fault is held (see [`FaultKind::hold_range_ms`]), in milliseconds.
    pub hold_ms: u64,
}

/// The shortest and longest gap between two faults, in milliseconds.
pub const GAP_MS: (u64, u64) = (10_000, 20_000);

/// The schedule of a soak with `seed` whose faults start within `secs` seconds: one fault every
/// 10-20 s, the first at 0, kinds dealt from a reshuffled deck. Always at least one fault.
pub fn plan(seed: u64, secs: u64) -> Vec<PlannedFault> {
    let mut rng = SplitMix64::new(seed);
    let mut deck: Vec<FaultKind> = Vec::new();
    let mut faults = Vec::new();
    let mut at_ms = 0;
    let window_ms = secs.saturating_mul(1_000);
    loop {
        if deck.is_empty() {
            deck = FaultKind::ALL.to_vec();
            // Fisher-Yates; the deck is dealt from its end.
            for i in (1..deck.len()).rev() {
                let j = rng.between(0, i as u64) as usize;
                deck.swap(i, j);
            }
        }
        let kind = deck.pop().expect("a refilled deck");
        let (low, high) = kind.hold_range_ms();
        let hold_ms = rng.between(low, high);
        faults.push(PlannedFault {
            at_ms,
            kind,
            hold_ms,
        });
        at_ms += rng.between(GAP_MS.0, GAP_MS.1);
        if at_ms >= window_ms {
            return faults;
        }
    }
}

/// The schedule as text, one fault a line (printed and saved in the run directory).
pub fn render(seed: u64, secs: u64, faults: &[PlannedFault]) -> String {
    let mut text = format!(
        "soak seed {seed}, {secs} s of faults, {} faults (replay: QUORATE_SOAK_SEED={seed} QUORATE_SOAK_SECS={secs})\n",
        faults.len()
    );
    for (i, f) in faults.iter().enumerate() {
        text.push_str(&format!(
            "{:>3}. at {:>7.1} s  {} (hold {} ms)\n",
            i + 1,
            f.at_ms as f64 / 1000.0,
            f.kind,
            f.hold_ms
        ));
    }
    text
}

/// The most mysqld kills between two epoch-renewing faults in `faults` (the soak expects every
/// kill to be restarted in place, which needs at most `group.max_restarts_in_place` = 2).
pub fn max_kills_per_epoch(faults: &[PlannedFault]) -> usize {
    let mut most = 0;
    let mut run = 0;
    for f in faults {
        if f.kind.renews_epoch() {
            run = 0;
        } else if f.kind == FaultKind::MysqldKill {
            run += 1;
            most = most.max(run);
        }
    }
    most
}
