//! Scenario tests of the decision core: each test is one situation, named after it, and
//! asserts the exact actions and the reason code (and, where the wording matters, the text).

mod combined_scenarios;
mod invariants;
mod leader_scenarios;
mod node_scenarios;
mod support;
