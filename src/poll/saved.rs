//! What the learned durations keep across processes: a versioned, bounded JSON document.
//!
//! A command-line wait lives for one job; what it learned would die with it. So
//! [`LearnedDurations::export`] writes the samples (never the waits in flight) as
//! [`SavedDurations`], and [`LearnedDurations::import`] reads them back into a history. The
//! file is read as untrusted input: at most [`MAX_SAVED_BYTES`] and [`MAX_SAVED_SAMPLES`],
//! every sample checked, and anything wrong is a [`LearnedStateError`] naming it — never a
//! panic, never a partial import.

use serde::{Deserialize, Serialize};

use super::{LearnedDurations, Sample};

/// The format this version writes and reads.
pub const SAVED_FORMAT: u32 = 1;
/// The largest saved document read (256 KiB: 4,096 samples take about 120 KiB).
pub const MAX_SAVED_BYTES: usize = 256 * 1024;
/// The most samples a saved document may hold.
pub const MAX_SAVED_SAMPLES: usize = 4096;
/// The longest duration a saved sample may name: a year, in seconds.
const MAX_AGE_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// Learned job durations, as kept between processes ([`LearnedDurations::export`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedDurations {
    /// [`SAVED_FORMAT`].
    pub format: u32,
    /// Each sample as `[lo, hi]` seconds of job age (`hi` null: still running when its wait
    /// stopped), oldest first.
    pub samples: Vec<(f64, Option<f64>)>,
}

/// Why saved learned durations cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LearnedStateError {
    /// The document is larger than [`MAX_SAVED_BYTES`].
    #[error("the saved learned durations are {bytes} bytes, more than the {limit} read")]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// [`MAX_SAVED_BYTES`].
        limit: usize,
    },
    /// It is not the JSON this crate writes.
    #[error("the saved learned durations do not parse: {0}")]
    Malformed(String),
    /// Another format version wrote it.
    #[error("the saved learned durations are format {found}; this version reads {expected}")]
    Format {
        /// The document's version.
        found: u32,
        /// [`SAVED_FORMAT`].
        expected: u32,
    },
    /// More samples than [`MAX_SAVED_SAMPLES`].
    #[error("the saved learned durations hold {count} samples, more than {limit}")]
    TooMany {
        /// How many.
        count: usize,
        /// [`MAX_SAVED_SAMPLES`].
        limit: usize,
    },
    /// A sample is not an interval of ages (negative, reversed, not finite, or over a year).
    #[error("saved sample #{index} is not an interval of job ages")]
    BadSample {
        /// Its place in the list, from 0.
        index: usize,
    },
}

impl SavedDurations {
    /// The document as JSON.
    pub fn to_json(&self) -> String {
        // Floats, options and a number: nothing here fails to serialise.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a document written by [`to_json`](Self::to_json), checking everything.
    pub fn from_json(bytes: &[u8]) -> Result<Self, LearnedStateError> {
        if bytes.len() > MAX_SAVED_BYTES {
            return Err(LearnedStateError::TooLarge {
                bytes: bytes.len(),
                limit: MAX_SAVED_BYTES,
            });
        }
        let saved: SavedDurations = serde_json::from_slice(bytes)
            .map_err(|e| LearnedStateError::Malformed(e.to_string()))?;
        saved.check()?;
        Ok(saved)
    }

    fn check(&self) -> Result<(), LearnedStateError> {
        if self.format != SAVED_FORMAT {
            return Err(LearnedStateError::Format {
                found: self.format,
                expected: SAVED_FORMAT,
            });
        }
        if self.samples.len() > MAX_SAVED_SAMPLES {
            return Err(LearnedStateError::TooMany {
                count: self.samples.len(),
                limit: MAX_SAVED_SAMPLES,
            });
        }
        let age = |x: f64| x.is_finite() && (0.0..=MAX_AGE_SECS).contains(&x);
        for (index, &(lo, hi)) in self.samples.iter().enumerate() {
            let fine = age(lo) && hi.is_none_or(|hi| age(hi) && hi >= lo);
            if !fine {
                return Err(LearnedStateError::BadSample { index });
            }
        }
        Ok(())
    }
}

impl LearnedDurations {
    /// The samples learned so far (not the waits in flight), to keep: see
    /// [`SavedDurations`].
    pub fn export(&self) -> SavedDurations {
        let samples = self
            .recent(MAX_SAVED_SAMPLES)
            .iter()
            .map(|s| (s.lo().as_secs_f64(), s.hi().map(|hi| hi.as_secs_f64())))
            .collect();
        SavedDurations {
            format: SAVED_FORMAT,
            samples,
        }
    }

    /// Adds the saved samples, oldest first (the history keeps its latest `capacity`), after
    /// checking all of them: a document with one bad sample adds none. Returns how many were
    /// added.
    pub fn import(&self, saved: &SavedDurations) -> Result<usize, LearnedStateError> {
        saved.check()?;
        let samples: Vec<Sample> = saved
            .samples
            .iter()
            .map(|&(lo, hi)| {
                let lo = super::seconds(lo);
                match hi {
                    Some(hi) => Sample::between(lo, super::seconds(hi)),
                    None => Sample::at_least(lo),
                }
            })
            .collect();
        self.record_all(&samples);
        Ok(samples.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;

    fn s(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    #[test]
    fn what_is_exported_is_imported() {
        let learned = LearnedDurations::new(16);
        learned.record(Sample::between(s(1.5), s(2.0)));
        learned.record(Sample::exact(s(3.0)));
        learned.record(Sample::at_least(s(9.0)));
        let _running = learned.track();
        let json = learned.export().to_json();
        assert!(
            json.starts_with(r#"{"format":1,"samples":[[1.5,2.0],"#),
            "{json}"
        );
        let back = LearnedDurations::new(16);
        let saved = SavedDurations::from_json(json.as_bytes()).unwrap();
        assert_eq!(back.import(&saved).unwrap(), 3);
        assert_eq!(back.export(), learned.export());
        assert_eq!(back.model().samples(), 3);
        assert_eq!(back.model().ended(), 2);
        // A small history keeps the latest.
        let small = LearnedDurations::new(2);
        small.import(&saved).unwrap();
        assert_eq!(small.export().samples.len(), 2);
        assert_eq!(small.export().samples[1], (9.0, None));
    }

    #[test]
    fn a_damaged_document_is_a_typed_error() {
        let err = |text: &str| SavedDurations::from_json(text.as_bytes()).unwrap_err();
        assert!(matches!(err(""), LearnedStateError::Malformed(_)));
        assert!(matches!(
            err("{\"format\":1,"),
            LearnedStateError::Malformed(_)
        ));
        assert!(matches!(err("[1,2]"), LearnedStateError::Malformed(_)));
        assert!(matches!(
            err(r#"{"format":1,"samples":[],"extra":0}"#),
            LearnedStateError::Malformed(_)
        ));
        assert_eq!(
            err(r#"{"format":2,"samples":[]}"#),
            LearnedStateError::Format {
                found: 2,
                expected: 1
            }
        );
        for bad in ["[-1.0,2.0]", "[3.0,2.0]", "[1e300,null]", "[0.0,1e12]"] {
            let text = format!(r#"{{"format":1,"samples":[[1.0,2.0],{bad}]}}"#);
            assert_eq!(
                err(&text),
                LearnedStateError::BadSample { index: 1 },
                "{bad}"
            );
        }
        let many = format!(
            r#"{{"format":1,"samples":[{}]}}"#,
            vec!["[1,2]"; MAX_SAVED_SAMPLES + 1].join(",")
        );
        assert!(matches!(err(&many), LearnedStateError::TooMany { .. }));
        let huge = vec![b' '; MAX_SAVED_BYTES + 1];
        assert!(matches!(
            SavedDurations::from_json(&huge).unwrap_err(),
            LearnedStateError::TooLarge { .. }
        ));
        // Every prefix of a good document fails cleanly, none panics.
        let learned = LearnedDurations::new(8);
        learned.record(Sample::between(s(1.0), s(2.0)));
        let good = learned.export().to_json();
        for cut in 0..good.len() {
            assert!(SavedDurations::from_json(&good.as_bytes()[..cut]).is_err());
        }
        // Nothing is imported from a document with one bad sample.
        let target = LearnedDurations::new(8);
        let bad = SavedDurations {
            format: 1,
            samples: vec![(1.0, Some(2.0)), (f64::NAN, None)],
        };
        assert!(target.import(&bad).is_err());
        assert_eq!(target.model().samples(), 0);
    }
}
