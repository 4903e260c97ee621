//! Deserializer component for engagements of the training-samples job, one JSON
//! object per record. Unknown fields are ignored; a missing, null, mistyped
//! or empty required field makes the record invalid; malformed JSON (or a
//! payload that is not UTF-8) is a decode error. Read with `wafer_sdk::json`
//! (`Engagement::from_json`).

use training::Engagement;
use wafer_sdk::{Config, Deserializer, Error};

struct EngagementJson;

impl Deserializer for EngagementJson {
    type Record<'a> = Engagement<'a>;

    fn new(_config: &Config) -> Result<Self, String> {
        Ok(EngagementJson)
    }

    fn deserialize<'a>(&mut self, payload: &'a [u8]) -> Result<Engagement<'a>, Error> {
        Engagement::from_json(payload)
    }
}

wafer_sdk::deserializer!(EngagementJson);
