//! A filter that keeps every row and reads no field: its cost per record is
//! the boundary's cost.

use wafer_sdk::row::Schema;
use wafer_sdk::{Config, Error, Filter, Record};

/// Reads no field.
#[derive(Record)]
struct Nothing {}

struct KeepAll;

impl Filter for KeepAll {
    type Record<'a> = Nothing;

    fn new(_config: &Config, _input: &Schema) -> Result<Self, String> {
        Ok(KeepAll)
    }

    fn keep(&mut self, _record: &Nothing) -> Result<bool, Error> {
        Ok(true)
    }
}

wafer_sdk::filter!(KeepAll);
