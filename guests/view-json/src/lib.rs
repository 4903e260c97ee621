//! Deserializer component for views of the training-samples job, one JSON
//! object per record. Unknown fields are ignored; a missing, null, mistyped
//! or empty required field makes the record invalid.

use training::View;
use wafer_sdk::{Config, Deserializer, Error};

struct ViewJson;

impl Deserializer for ViewJson {
    type Record<'a> = View<'a>;

    fn new(_config: &Config) -> Result<Self, String> {
        Ok(ViewJson)
    }

    fn deserialize<'a>(&mut self, payload: &'a [u8]) -> Result<View<'a>, Error> {
        serde_json::from_slice::<View<'a>>(payload)?.validate()
    }
}

wafer_sdk::deserializer!(ViewJson);
