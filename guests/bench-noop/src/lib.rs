//! A deserializer that does not decode: each payload becomes a one-field row
//! holding its length. What it costs per record is the boundary's cost
//! (copying the batch in, the SDK's loop, the row out, the host's checks).

use wafer_sdk::{Config, Deserializer, Error, Record};

/// The payload's length; nothing else is read.
#[derive(Record)]
struct Length {
    #[wafer(event_time)]
    len: i64,
}

struct Noop;

impl Deserializer for Noop {
    type Record<'a> = Length;

    fn new(_config: &Config) -> Result<Self, String> {
        Ok(Noop)
    }

    fn deserialize(&mut self, payload: &[u8]) -> Result<Length, Error> {
        Ok(Length {
            len: payload.len() as i64,
        })
    }
}

wafer_sdk::deserializer!(Noop);
