//! Deserializer component for interaction events written as one JSON object
//! per record. Unknown fields are ignored; missing or mistyped required
//! fields and an empty `user_id` make the record invalid; malformed JSON
//! (or a payload that is not UTF-8) is a decode error. Read with
//! `wafer_sdk::json` (`Interaction::from_json`).

use interaction::Interaction;
use wafer_sdk::{Config, Deserializer, Error};

struct InteractionJson;

impl Deserializer for InteractionJson {
    type Record<'a> = Interaction<'a>;

    fn new(_config: &Config) -> Result<Self, String> {
        Ok(InteractionJson)
    }

    fn deserialize<'a>(&mut self, payload: &'a [u8]) -> Result<Interaction<'a>, Error> {
        Interaction::from_json(payload)
    }
}

wafer_sdk::deserializer!(InteractionJson);
