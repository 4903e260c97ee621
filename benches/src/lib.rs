//! Benchmarks of the wafer host (criterion)
