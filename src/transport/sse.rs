//! A small Server-Sent Events decoder (the WHATWG event-stream format).
//!
//! Bytes in, events out: fields `event`, `data` (joined by newlines), `id` and `retry`;
//! comment lines (`: keep-alive`) ignored; `\n`, `\r\n` and `\r` line ends; an event is
//! dispatched at a blank line.
//!
//! Nothing from the other side of the wire is held without a bound. A line is at most
//! [`MAX_LINE`] bytes, and an event — its `data` lines, its type and its id together — at
//! most [`MAX_EVENT`]: an event carries one status document, so it is held to the default limit
//! of a status body (1 MiB, whatever `ClientBuilder::max_response_body` says). A stream that breaks either limit (`data:` lines that never reach the blank
//! line ending their event, say) ends with an [`Oversized`] error; the wait drops the
//! connection and polls instead.

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
pub(crate) const MAX_LINE: usize = 1 << 20;

/// The largest event kept (its `data`, `event` and `id` fields together, 1 MiB): the default
/// limit of a status body, since an event carries one status document.
pub(crate) const MAX_EVENT: usize = super::attempts::DEFAULT_MAX_BODY;

#[derive(Debug)]
pub(crate) struct Decoder {
    /// The longest line kept ([`MAX_LINE`] outside tests).
    max_line: usize,
    /// The largest event kept ([`MAX_EVENT`] outside tests).
    max_event: usize,
    line: Vec<u8>,
    after_cr: bool,
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
    retry: Option<Duration>,
    ready: VecDeque<SseEvent>,
}

/// A stream that broke a size limit: broken or hostile, and not worth reading further.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Oversized {
    /// A line longer than [`MAX_LINE`].
    #[error("event stream line longer than {MAX_LINE} bytes")]
    Line,
    /// An event larger than [`MAX_EVENT`] before its ending blank line.
    #[error("event stream event larger than {MAX_EVENT} bytes")]
    Event,
}

/// Whether a stream failed because it broke a size limit (not a transient break: the stream
/// is not worth reopening).
pub(crate) fn oversized(error: &StreamError) -> bool {
    error.downcast_ref::<Oversized>().is_some()
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::with_limits(MAX_LINE, MAX_EVENT)
    }
}

impl Decoder {
    /// A decoder with other limits than the stream's (small ones let tests reach them).
    pub(crate) fn with_limits(max_line: usize, max_event: usize) -> Self {
        Decoder {
            max_line,
            max_event,
            line: Vec::new(),
            after_cr: false,
            event: None,
            data: None,
            id: None,
            retry: None,
            ready: VecDeque::new(),
        }
    }

    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Result<(), Oversized> {
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    self.line_done(&line)?;
                }
                _ => {
                    self.after_cr = false;
                    if self.line.len() >= self.max_line {
                        return Err(Oversized::Line);
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

    fn line_done(&mut self, line: &[u8]) -> Result<(), Oversized> {
        if line.is_empty() {
            self.dispatch();
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
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
        if self.size() > self.max_event {
            return Err(Oversized::Event);
        }
        Ok(())
    }

    /// Bytes held for the event being read.
    pub(crate) fn size(&self) -> usize {
        [&self.event, &self.data, &self.id]
            .into_iter()
            .map(|field| field.as_ref().map_or(0, String::len))
            .sum()
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
        assert_eq!(d.feed(&big), Err(Oversized::Line));
    }

    #[test]
    fn an_event_that_never_ends_is_refused_at_its_limit() {
        let mut d = Decoder::default();
        let line = format!("data: {}\n", "x".repeat(1000));
        let mut fed = 0;
        let result = loop {
            if let Err(e) = d.feed(line.as_bytes()) {
                break e;
            }
            fed += line.len();
            assert!(fed <= 2 * MAX_EVENT, "fed {fed} bytes without a refusal");
        };
        assert_eq!(result, Oversized::Event);
        assert!(
            fed >= MAX_EVENT - line.len(),
            "refused early, after {fed} bytes"
        );
        assert!(d.size() <= MAX_EVENT + line.len());
        // Many events of ordinary size are fine, however long the stream.
        let mut d = Decoder::default();
        let event = format!("id: 7\ndata: {}\n\n", "y".repeat(1000));
        for _ in 0..2 * MAX_EVENT / event.len() {
            d.feed(event.as_bytes()).unwrap();
            while d.next_event().is_some() {}
        }
        // Neither do other fields add up: only the latest `event` and `id` count.
        let mut d = Decoder::default();
        for _ in 0..2 * MAX_EVENT / 1000 {
            d.feed(format!("id: {}\nevent: x\nretry: 5\n", "z".repeat(990)).as_bytes())
                .unwrap();
        }
    }

    #[tokio::test]
    async fn an_oversized_event_ends_the_stream_with_a_typed_error() {
        let line = Bytes::from(format!("data: {}\n", "x".repeat(4096)));
        let endless = futures_util::stream::repeat(line).map(Ok::<_, std::io::Error>);
        let mut events = events(endless);
        let error = match events.next().await {
            Some(Err(e)) => e,
            other => panic!("expected an error, got {other:?}"),
        };
        assert!(oversized(&error), "{error}");
        assert!(
            events.next().await.is_none(),
            "the stream ends after the error"
        );
        let io: StreamError = Box::new(std::io::Error::other("reset"));
        assert!(!oversized(&io));
    }
}
