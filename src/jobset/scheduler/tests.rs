//! The scheduler in paused time, over a scripted wire.
