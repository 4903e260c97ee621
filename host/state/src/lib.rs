//! Internal: wafer keyed state and timers on RocksDB
