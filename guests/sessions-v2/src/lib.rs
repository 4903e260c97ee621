//! Version 0.2.0 of the sessions processor: the sources of `guests/sessions`
//! built under another package version, so that a test can upgrade a running
//! job's processor from a savepoint (state must carry over by the
//! processor's name, not by its component).

#[path = "../../sessions/src/lib.rs"]
mod sessions;
