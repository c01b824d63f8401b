//! Reads the agent's lines with a bounded buffer, safely inside `tokio::select!`.
//!
//! The guard waits on its input, its deadline and its pet timer at once, so reading a line must
//! survive being cancelled halfway: the partial line lives in the reader, not in the future.
//! A line longer than [`MAX_LINE_BYTES`] is skipped up to its newline without growing the
//! buffer, and bytes left without a newline when the input ends are rejected, never trusted
//! (the agent may have died in the middle of writing a deadline).

use super::protocol::{ProtocolError, MAX_LINE_BYTES};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// One step of the input.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LineEvent {
    /// A complete line, without its newline, not longer than [`MAX_LINE_BYTES`].
    Line(Vec<u8>),
    /// A line that cannot be a message, for a reason found before parsing.
    Rejected(ProtocolError),
    /// The input ended (EOF, or a read error, which is logged and treated the same way).
    Closed,
}

/// A line reader over the guard's input.
pub(crate) struct LineReader<R> {
    input: R,
    pending: Vec<u8>,
    /// Bytes of the current line beyond what `pending` kept; non-zero means the line is too long.
    overflow: usize,
    closed: bool,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    pub(crate) fn new(input: R) -> Self {
        LineReader {
            input,
            pending: Vec::with_capacity(MAX_LINE_BYTES),
            overflow: 0,
            closed: false,
        }
    }

    /// The next line or the end of input. Cancel-safe: the only await is `fill_buf`, and bytes
    /// are consumed only after they are stored in `self`.
    pub(crate) async fn next_line(&mut self) -> LineEvent {
        if self.closed {
            return LineEvent::Closed;
        }
        loop {
            let available = match self.input.fill_buf().await {
                Ok(available) => available,
                Err(error) => {
                    tracing::error!(%error, "lease guard cannot read its input; treating it as closed");
                    return self.close();
                }
            };
            if available.is_empty() {
                return self.close();
            }
            let (chunk, newline) = match available.iter().position(|&b| b == b'\n') {
                Some(at) => (&available[..at], true),
                None => (available, false),
            };
            let room = MAX_LINE_BYTES.saturating_sub(self.pending.len());
            let kept = chunk.len().min(room);
            self.pending.extend_from_slice(&chunk[..kept]);
            self.overflow += chunk.len() - kept;
            let used = chunk.len() + usize::from(newline);
            self.input.consume(used);
            if newline {
                return self.take_line();
            }
        }
    }

    fn take_line(&mut self) -> LineEvent {
        let line = std::mem::take(&mut self.pending);
        let overflow = std::mem::take(&mut self.overflow);
        if overflow > 0 {
            LineEvent::Rejected(ProtocolError::TooLong(line.len() + overflow))
        } else {
            LineEvent::Line(line)
        }
    }

    fn close(&mut self) -> LineEvent {
        if self.pending.is_empty() && self.overflow == 0 {
            self.closed = true;
            return LineEvent::Closed;
        }
        // Report the unterminated fragment once; the next call reports the close.
        let length = self.pending.len() + self.overflow;
        self.pending.clear();
        self.overflow = 0;
        LineEvent::Rejected(ProtocolError::Unterminated(length))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncWriteExt, BufReader};

    #[tokio::test]
    async fn splits_lines_rejects_long_and_unterminated() {
        let long = vec![b'9'; MAX_LINE_BYTES * 3];
        let mut data = b"ping\narm 1 2\n".to_vec();
        data.extend_from_slice(&long);
        data.extend_from_slice(b"\n\ndisarm 4");
        // A tiny buffer forces lines to arrive in pieces.
        let mut reader = LineReader::new(BufReader::with_capacity(5, &data[..]));
        assert_eq!(reader.next_line().await, LineEvent::Line(b"ping".to_vec()));
        assert_eq!(
            reader.next_line().await,
            LineEvent::Line(b"arm 1 2".to_vec())
        );
        assert_eq!(
            reader.next_line().await,
            LineEvent::Rejected(ProtocolError::TooLong(MAX_LINE_BYTES * 3))
        );
        assert_eq!(reader.next_line().await, LineEvent::Line(Vec::new()));
        assert_eq!(
            reader.next_line().await,
            LineEvent::Rejected(ProtocolError::Unterminated(8))
        );
        assert_eq!(reader.next_line().await, LineEvent::Closed);
        assert_eq!(reader.next_line().await, LineEvent::Closed);
    }

    #[tokio::test]
    async fn a_cancelled_read_keeps_the_partial_line() {
        let (mut writer, read_half) = tokio::io::duplex(64);
        let mut reader = LineReader::new(BufReader::new(read_half));
        writer.write_all(b"arm 12").await.expect("write");
        // The read cannot finish without a newline; cancel it once it has taken the bytes.
        let cancelled =
            tokio::time::timeout(std::time::Duration::from_millis(50), reader.next_line()).await;
        assert!(cancelled.is_err(), "no newline yet, so no line");
        writer.write_all(b"3 9\n").await.expect("write");
        assert_eq!(
            reader.next_line().await,
            LineEvent::Line(b"arm 123 9".to_vec())
        );
        drop(writer);
        assert_eq!(reader.next_line().await, LineEvent::Closed);
    }
}
