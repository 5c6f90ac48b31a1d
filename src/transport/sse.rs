//! A small Server-Sent Events decoder (the WHATWG event-stream format).
//!
//! Bytes in, events out: fields `event`, `data` (joined by newlines), `id` and `retry`;
//! comment lines (`: keep-alive`) ignored; `\n`, `\r\n` and `\r` line ends; an event is
//! dispatched at a blank line.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct SseEvent {
    /// The event type (`message` when the stream did not name one).
    pub(crate) event: String,
    pub(crate) data: String,
    /// The `id` field of this event, when it had one.
    pub(crate) id: Option<String>,
    /// A reconnection delay the server asked for.
    pub(crate) retry: Option<Duration>,
}

/// The longest line kept: a stream sending more without a newline is broken or hostile.
const MAX_LINE: usize = 1 << 20;

#[derive(Debug, Default)]
pub(crate) struct Decoder {
    line: Vec<u8>,
    after_cr: bool,
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
    retry: Option<Duration>,
    ready: VecDeque<SseEvent>,
}

#[derive(Debug, thiserror::Error)]
#[error("event stream line longer than {MAX_LINE} bytes")]
pub(crate) struct LineTooLong;

impl Decoder {
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<(), LineTooLong> {
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    self.line_done(&line);
                }
                _ => {
                    self.after_cr = false;
                    if self.line.len() >= MAX_LINE {
                        return Err(LineTooLong);
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(())
    }

    pub(crate) fn next_event(&mut self) -> Option<SseEvent> {
        self.ready.pop_front()
    }

    fn line_done(&mut self, line: &[u8]) {
        if line.is_empty() {
            self.dispatch();
            return;
        }
        if line[0] == b':' {
            return;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            "retry" => {
                if let Ok(ms) = value.trim().parse::<u64>() {
                    self.retry = Some(Duration::from_millis(ms));
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        let event = self.event.take();
        let id = self.id.take();
        let retry = self.retry.take();
        if let Some(data) = self.data.take() {
            self.ready.push_back(SseEvent {
                event: event
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| "message".to_owned()),
                data,
                id,
                retry,
            });
        }
    }
}

/// A failure while reading the stream.
pub(crate) type StreamError = Box<dyn std::error::Error + Send + Sync>;

/// Events as they arrive.
pub(crate) type EventStream = Pin<Box<dyn Stream<Item = Result<SseEvent, StreamError>> + Send>>;

/// Decodes a byte stream into events.
pub(crate) fn events<S, E>(bytes: S) -> EventStream
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let state = (Box::pin(bytes), Decoder::default(), false);
    Box::pin(futures_util::stream::unfold(
        state,
        |(mut bytes, mut decoder, failed)| async move {
            if failed {
                return None;
            }
            loop {
                if let Some(event) = decoder.next_event() {
                    return Some((Ok(event), (bytes, decoder, false)));
                }
                match bytes.next().await {
                    Some(Ok(chunk)) => {
                        if let Err(e) = decoder.feed(&chunk) {
                            return Some((Err(Box::new(e) as StreamError), (bytes, decoder, true)));
                        }
                    }
                    Some(Err(e)) => {
                        return Some((Err(Box::new(e) as StreamError), (bytes, decoder, true)));
                    }
                    None => return None,
                }
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn decode(chunks: &[&str]) -> Vec<SseEvent> {
        let mut d = Decoder::default();
        let mut out = vec![];
        for c in chunks {
            d.feed(c.as_bytes()).unwrap();
            while let Some(e) = d.next_event() {
                out.push(e);
            }
        }
        out
    }

    #[test]
    fn decodes_the_status_stream() {
        let events = decode(&[
            "event: status\nid: 1\ndata: {\"result\":\"pending\"}\n\n",
            ": keep-alive\n\n",
            "event: progress\ndata: {\"progress\":0.5}\n\n",
            "event: status\r\nid: 2\r\ndata: {\"result\":",
            "\"completed\"}\r\n\r\n",
        ]);
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(events[0].event, "status");
        assert_eq!(events[0].id.as_deref(), Some("1"));
        assert_eq!(events[1].event, "progress");
        assert_eq!(events[1].id, None);
        assert_eq!(events[2].data, "{\"result\":\"completed\"}");
        assert_eq!(events[2].id.as_deref(), Some("2"));
    }

    #[test]
    fn field_rules() {
        let events = decode(&["data:a\ndata: b\nretry: 1500\nignored: x\n\r", "data\n\n"]);
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0].event, "message");
        assert_eq!(events[0].data, "a\nb");
        assert_eq!(events[0].retry, Some(Duration::from_millis(1500)));
        assert_eq!(events[1].data, "");
        // A blank line with no data dispatches nothing.
        assert!(decode(&["event: status\n\n"]).is_empty());
        // Split CR LF across chunks is one line end.
        let events = decode(&["data: x\r", "\n\r", "\n"]);
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn overlong_lines_are_refused() {
        let mut d = Decoder::default();
        let big = vec![b'a'; MAX_LINE + 1];
        assert!(d.feed(&big).is_err());
    }
}
