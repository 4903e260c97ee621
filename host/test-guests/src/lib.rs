//! Paths of the repository's guest components, built from source by this
//! crate's build script (`wafer-guests-build`). Tests and benches use these
//! constants; nothing loads a checked-in binary.

include!(concat!(env!("OUT_DIR"), "/components.rs"));
