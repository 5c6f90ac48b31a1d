//! Cursors: positions in the change log, as clients see and send them back.
//!
//! A cursor is `<epoch>:<offset>`, two decimal numbers: the log's *epoch* (drawn when the log
//! starts, so a cursor of an earlier run or another log never passes for one of this) and the
//! *offset* of the last change the holder has seen (`0`: none). Clients treat it as opaque: they
//! keep the last one they received and send it back unchanged.
//!
//! A cursor comes from the other side of the wire (`Last-Event-ID`, `?since=`), so parsing is
//! strict and bounded: exactly two runs of ASCII digits around one colon, each fitting a `u64`,
//! at most [`MAX_LEN`] bytes in all. Anything else is a [`BadCursor`] (answered `400
//! invalid_cursor`), never a panic and never a guess. A well-formed cursor the log cannot serve
//! (another epoch, history gone) is not an error: the log answers it with a reset.

use std::fmt;
use std::str::FromStr;

/// Longest cursor text accepted: two 20-digit numbers and a colon.
pub const MAX_LEN: usize = 41;

/// A position in the change log: everything up to and including `offset`, in `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// Which log (and which run of it) the offset counts in.
    pub epoch: u64,
    /// The last change covered; `0` before the first.
    pub offset: u64,
}

impl Cursor {
    /// The cursor at `offset` in `epoch`.
    pub fn new(epoch: u64, offset: u64) -> Self {
        Cursor { epoch, offset }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.offset)
    }
}

/// Text that is not a cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a cursor is `<epoch>:<offset>`, two decimal numbers, as the server sent it")]
pub struct BadCursor;

impl FromStr for Cursor {
    type Err = BadCursor;

    fn from_str(text: &str) -> Result<Self, BadCursor> {
        if text.len() > MAX_LEN {
            return Err(BadCursor);
        }
        let (epoch, offset) = text.split_once(':').ok_or(BadCursor)?;
        Ok(Cursor {
            epoch: number(epoch)?,
            offset: number(offset)?,
        })
    }
}

/// One run of 1 to 20 ASCII digits that fits a `u64` (no sign, no space).
fn number(text: &str) -> Result<u64, BadCursor> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BadCursor);
    }
    text.parse().map_err(|_| BadCursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_as_written() {
        for (epoch, offset) in [(1, 0), (7, 42), (u64::MAX, u64::MAX), (0, 1)] {
            let c = Cursor::new(epoch, offset);
            let text = c.to_string();
            assert!(text.len() <= MAX_LEN, "{text}");
            assert_eq!(text.parse::<Cursor>(), Ok(c));
        }
        assert_eq!(Cursor::new(12, 3).to_string(), "12:3");
        // Leading zeros are numbers all the same.
        assert_eq!("012:003".parse(), Ok(Cursor::new(12, 3)));
    }

    #[test]
    fn anything_else_is_refused() {
        let too_big = format!("{}0:1", u64::MAX);
        let too_long = format!("{}:{}", "0".repeat(30), "1".repeat(11));
        let garbage = [
            "",
            ":",
            "1",
            "1:",
            ":1",
            "1:2:3",
            "-1:2",
            "+1:2",
            "1:-2",
            " 1:2",
            "1:2 ",
            "1 :2",
            "a:1",
            "0x1:2",
            "1.0:2",
            "1:2e3",
            "١:٢",
            "1:2\n",
            too_big.as_str(),
            too_long.as_str(),
            "18446744073709551616:0",
        ];
        for text in garbage {
            assert_eq!(text.parse::<Cursor>(), Err(BadCursor), "{text:?}");
        }
    }
}
