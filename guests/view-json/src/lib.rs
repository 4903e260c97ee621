//! Deserializer component for views of the training-samples job, one JSON
//! object per record. Unknown fields are ignored; a missing, null, mistyped
//! or empty required field makes the record invalid; malformed JSON (or a
//! payload that is not UTF-8) is a decode error. Read with `wafer_sdk::json`
//! (`View::from_json`).

use training::View;
use wafer_sdk::{Config, Deserializer, Error};

struct ViewJson;

impl Deserializer for ViewJson {
    type Record<'a> = View<'a>;

    fn new(_config: &Config) -> Result<Self, String> {
        Ok(ViewJson)
    }

    fn deserialize<'a>(&mut self, payload: &'a [u8]) -> Result<View<'a>, Error> {
        View::from_json(payload)
    }
}

wafer_sdk::deserializer!(ViewJson);
