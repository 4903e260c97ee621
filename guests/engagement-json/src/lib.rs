//! Deserializer component for engagements of the training-samples job, one JSON
//! object per record. Unknown fields are ignored; a missing, null, mistyped
//! or empty required field makes the record invalid.

use training::Engagement;
use wafer_sdk::{Config, Deserializer, Error};

struct EngagementJson;

impl Deserializer for EngagementJson {
    type Record<'a> = Engagement<'a>;

    fn new(_config: &Config) -> Result<Self, String> {
        Ok(EngagementJson)
    }

    fn deserialize<'a>(&mut self, payload: &'a [u8]) -> Result<Engagement<'a>, Error> {
        serde_json::from_slice::<Engagement<'a>>(payload)?.validate()
    }
}

wafer_sdk::deserializer!(EngagementJson);
