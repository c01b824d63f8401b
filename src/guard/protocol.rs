//! The line protocol the agent speaks to its guard over the guard's stdin.
//!
//! One message per line, ASCII, fields separated by one space, numbers in plain decimal:
//!
//! ```text
//! arm <deadline_ns> <epoch>              the lease holds until the deadline, under this epoch
//! disarm <epoch>                         the node holds nothing any more
//! ping                                   the agent is alive; changes nothing
//! ```
//!
//! Deadlines are nanoseconds on the lease clock (`CLOCK_BOOTTIME`, see
//! [`crate::clock::LEASE_CLOCK`]), which the agent and the guard both read. Parsing is strict: no signs, no extra spaces, no carriage
//! returns, no trailing fields, at most [`MAX_LINE_BYTES`] bytes. A line that breaks a rule is rejected with a [`ProtocolError`] that
//! names the problem; the guard logs it and keeps its current deadline, never panics.

use std::fmt;

/// The longest line the guard accepts, newline excluded; the longest valid line is 47 bytes.
pub const MAX_LINE_BYTES: usize = 128;

/// One message from the agent to its guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardCommand {
    /// The lease holds until `deadline_ns` on the lease clock, under owner epoch `epoch`.
    Arm {
        /// `lease_until` in lease-clock (`CLOCK_BOOTTIME`) nanoseconds.
        deadline_ns: u64,
        /// The owner epoch (fencing token) the lease belongs to.
        epoch: u64,
    },
    /// The node holds nothing of the resource group any more (after a clean stop or release).
    Disarm {
        /// The epoch whose resources were released.
        epoch: u64,
    },
    /// A liveness message; changes nothing.
    Ping,
}

/// Why a line is not a valid guard message. The agent that wrote it has a bug: fix the sender.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The line was empty.
    #[error("empty line; the agent must send arm, disarm or ping")]
    Empty,
    /// The line is longer than [`MAX_LINE_BYTES`].
    #[error("line of {0} bytes is longer than {MAX_LINE_BYTES}; the agent sent garbage")]
    TooLong(usize),
    /// The line is not printable ASCII (or has a carriage return, tab or control byte).
    #[error("line has a byte that is not printable ASCII at offset {0}; send plain ASCII lines")]
    BadByte(usize),
    /// Two spaces in a row, or a leading or trailing space.
    #[error("empty field (doubled, leading or trailing space); separate fields by one space")]
    EmptyField,
    /// The first word is not a known verb.
    #[error("unknown verb {0:?}; expected arm, disarm or ping")]
    UnknownVerb(String),
    /// The verb has the wrong number of fields.
    #[error("{verb} takes {expected} field(s), got {got}")]
    WrongArity {
        /// The verb.
        verb: &'static str,
        /// How many fields it takes.
        expected: usize,
        /// How many it got.
        got: usize,
    },
    /// A field is not a plain unsigned decimal that fits 64 bits.
    #[error("{field} {value:?} is not an unsigned decimal below 2^64")]
    BadNumber {
        /// Which field.
        field: &'static str,
        /// What was there.
        value: String,
    },
    /// The input ended in the middle of a line (the agent died while writing it).
    #[error("input ended inside a line of {0} bytes; an unterminated line is never trusted")]
    Unterminated(usize),
}

impl GuardCommand {
    /// Parses one line, without its trailing `\n`.
    pub fn parse(line: &[u8]) -> Result<GuardCommand, ProtocolError> {
        if line.is_empty() {
            return Err(ProtocolError::Empty);
        }
        if line.len() > MAX_LINE_BYTES {
            return Err(ProtocolError::TooLong(line.len()));
        }
        if let Some(offset) = line.iter().position(|b| !(b' '..=b'~').contains(b)) {
            return Err(ProtocolError::BadByte(offset));
        }
        // Every byte is printable ASCII, so this cannot fail; map it anyway rather than unwrap.
        let text =
            std::str::from_utf8(line).map_err(|e| ProtocolError::BadByte(e.valid_up_to()))?;
        let fields: Vec<&str> = text.split(' ').collect();
        if fields.iter().any(|f| f.is_empty()) {
            return Err(ProtocolError::EmptyField);
        }
        let args = &fields[1..];
        match fields[0] {
            "arm" => {
                arity("arm", 2, args.len())?;
                Ok(GuardCommand::Arm {
                    deadline_ns: number("deadline", args[0])?,
                    epoch: number("epoch", args[1])?,
                })
            }
            "disarm" => {
                arity("disarm", 1, args.len())?;
                Ok(GuardCommand::Disarm {
                    epoch: number("epoch", args[0])?,
                })
            }
            "ping" => {
                arity("ping", 0, args.len())?;
                Ok(GuardCommand::Ping)
            }
            other => Err(ProtocolError::UnknownVerb(other.to_string())),
        }
    }

    /// The line for this message, with its trailing `\n`, as the agent writes it.
    pub fn to_line(&self) -> String {
        format!("{self}\n")
    }
}

impl fmt::Display for GuardCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuardCommand::Arm { deadline_ns, epoch } => write!(f, "arm {deadline_ns} {epoch}"),
            GuardCommand::Disarm { epoch } => write!(f, "disarm {epoch}"),
            GuardCommand::Ping => f.write_str("ping"),
        }
    }
}

fn arity(verb: &'static str, expected: usize, got: usize) -> Result<(), ProtocolError> {
    if expected == got {
        Ok(())
    } else {
        Err(ProtocolError::WrongArity {
            verb,
            expected,
            got,
        })
    }
}

/// Plain decimal digits only: `u64::from_str` would also take a leading `+`.
fn number(field: &'static str, value: &str) -> Result<u64, ProtocolError> {
    let bad = || ProtocolError::BadNumber {
        field,
        value: value.to_string(),
    };
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    value.parse().map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<GuardCommand, ProtocolError> {
        GuardCommand::parse(line.as_bytes())
    }

    #[test]
    fn good_lines_parse() {
        assert_eq!(
            parse("arm 123456789 7"),
            Ok(GuardCommand::Arm {
                deadline_ns: 123_456_789,
                epoch: 7
            })
        );
        assert_eq!(
            parse("arm 18446744073709551615 0"),
            Ok(GuardCommand::Arm {
                deadline_ns: u64::MAX,
                epoch: 0
            })
        );
        assert_eq!(parse("disarm 42"), Ok(GuardCommand::Disarm { epoch: 42 }));
        assert_eq!(parse("ping"), Ok(GuardCommand::Ping));
    }

    #[test]
    fn lines_round_trip_through_to_line() {
        for command in [
            GuardCommand::Arm {
                deadline_ns: 987_654_321_000,
                epoch: 12,
            },
            GuardCommand::Disarm { epoch: 3 },
            GuardCommand::Ping,
        ] {
            let line = command.to_line();
            assert!(line.ends_with('\n'));
            let body = line.trim_end_matches('\n');
            assert_eq!(parse(body), Ok(command));
        }
    }

    #[test]
    fn bad_lines_are_rejected_with_the_reason() {
        use ProtocolError::*;
        assert_eq!(parse(""), Err(Empty));
        assert_eq!(parse("fence 1"), Err(UnknownVerb("fence".into())));
        assert_eq!(parse("ARM 1 2"), Err(UnknownVerb("ARM".into())));
        assert_eq!(
            parse("arm 1"),
            Err(WrongArity {
                verb: "arm",
                expected: 2,
                got: 1
            })
        );
        assert_eq!(
            parse("arm 1 2 3"),
            Err(WrongArity {
                verb: "arm",
                expected: 2,
                got: 3
            })
        );
        assert_eq!(
            parse("disarm"),
            Err(WrongArity {
                verb: "disarm",
                expected: 1,
                got: 0
            })
        );
        assert_eq!(
            parse("ping now"),
            Err(WrongArity {
                verb: "ping",
                expected: 0,
                got: 1
            })
        );
        assert_eq!(parse("arm  1 2"), Err(EmptyField));
        assert_eq!(parse(" ping"), Err(EmptyField));
        assert_eq!(parse("ping "), Err(EmptyField));
        assert_eq!(parse("ping\r"), Err(BadByte(4)));
        assert_eq!(parse("arm\t1 2"), Err(BadByte(3)));
        assert_eq!(GuardCommand::parse(b"arm \xff 2"), Err(BadByte(4)));
        for (line, field, value) in [
            ("arm +5 2", "deadline", "+5"),
            ("arm -5 2", "deadline", "-5"),
            ("arm 5 x", "epoch", "x"),
            ("arm 1e9 2", "deadline", "1e9"),
            (
                "arm 18446744073709551616 2",
                "deadline",
                "18446744073709551616",
            ),
            ("disarm 0x10", "epoch", "0x10"),
        ] {
            assert_eq!(
                parse(line),
                Err(BadNumber {
                    field,
                    value: value.into()
                }),
                "{line}"
            );
        }
        let long = format!("arm {} 1", "9".repeat(MAX_LINE_BYTES));
        assert_eq!(parse(&long), Err(TooLong(long.len())));
    }

    #[test]
    fn errors_say_what_was_wrong() {
        let message = parse("arm +5 2").unwrap_err().to_string();
        assert!(
            message.contains("deadline") && message.contains("+5"),
            "{message}"
        );
    }
}
