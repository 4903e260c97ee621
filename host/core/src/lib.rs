//! Pure stream-processing logic of the wafer host: framing of raw byte
//! streams, built-in filters, hashing and partitioning, keys, watermarks,
//! windows, JSON rendering of rows and dead-letter records.
//!
//! Nothing here performs I/O or touches Wasm, so every piece is unit-tested on
//! its own; the runtime and connectors wire these pieces to threads, files and
//! guests.

pub mod dead_letter;
pub mod filter;
pub mod framing;
pub mod hash;
pub mod json;
pub mod key;
pub mod time;
pub mod watermark;
pub mod window;
