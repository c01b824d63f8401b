//! quorate's gRPC services, and the only module that names generated protobuf types
//! ([`pb`]). Everything else in quorate talks in its own types: every client method here
//! takes and returns them, and the conversions live next to the code that needs them.
//!
//! Two services, each split by direction so that dependencies run one way:
//! - [`peer`]: arbiter to arbiter (openraft's RPCs, lease reports, forwarded proposals, the
//!   lease horizon, the bootstrap probe). [`peer::client`] sits below the arbiter and is used
//!   by the Raft network; [`peer::server`] sits above it and reaches it only through
//!   [`peer::server::PeerHandler`].
//! - [`admin`]: operators and `quoratectl` to any member. [`admin::client`] is used by the CLI
//!   and the DRBD handlers; [`admin::server`] reaches the arbiter only through
//!   [`admin::server::AdminHandler`]; [`admin::convert`] maps messages to quorate's types.
//!
//! This file holds the payload codec both peer directions share. Raft messages travel as a
//! version byte followed by JSON of openraft's own serde types. A payload with another
//! version byte, or one that does not decode, is refused with a clear error instead of being
//! guessed at.

pub mod admin;
pub mod peer;

/// Generated code for `proto/quorate.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("quorate.v1");
}

use serde::{de::DeserializeOwned, Serialize};

/// The payload format version this build writes and accepts.
pub const PAYLOAD_VERSION: u8 = 1;

/// Largest gRPC message quorate accepts (snapshots are tiny; this bounds a hostile peer).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// A payload that could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// Nothing at all was sent.
    #[error("empty payload")]
    Empty,
    /// Sent by a build that speaks another payload format.
    #[error("payload format version {0} is not supported (this build speaks {PAYLOAD_VERSION})")]
    Version(u8),
    /// The bytes are not a valid message of the expected type.
    #[error("payload does not decode: {0}")]
    Decode(String),
}

/// Encodes a message as a versioned payload.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![PAYLOAD_VERSION];
    // Serializing openraft's plain data types to JSON cannot fail: no maps with non-string
    // keys reach this point except through serde's own map support.
    if let Err(e) = serde_json::to_writer(&mut out, value) {
        tracing::error!(error = %e, "cannot encode a peer message");
    }
    out
}

/// Decodes a versioned payload.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, PayloadError> {
    let (&version, body) = bytes.split_first().ok_or(PayloadError::Empty)?;
    if version != PAYLOAD_VERSION {
        return Err(PayloadError::Version(version));
    }
    serde_json::from_slice(body).map_err(|e| PayloadError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_rejects_bad_input() {
        let bytes = encode(&vec![1u64, 2, 3]);
        assert_eq!(decode::<Vec<u64>>(&bytes).unwrap(), vec![1, 2, 3]);
        assert!(matches!(decode::<Vec<u64>>(&[]), Err(PayloadError::Empty)));
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(matches!(
            decode::<Vec<u64>>(&other),
            Err(PayloadError::Version(9))
        ));
        assert!(matches!(
            decode::<Vec<u64>>(&[PAYLOAD_VERSION, b'{']),
            Err(PayloadError::Decode(_))
        ));
    }
}
