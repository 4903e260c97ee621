//! The interaction event of the reference jobs (`interaction.proto`), as one
//! record type shared by the JSON, protobuf and Avro deserializers so that
//! all of them produce rows of exactly the same schema.

use std::borrow::Cow;

use serde::Deserialize;
use wafer_sdk::{Error, Record};

/// One user interaction. Strings borrow from the payload where they can.
#[derive(Debug, Clone, PartialEq, Record, Deserialize)]
pub struct Interaction<'a> {
    /// Unique id of the event.
    #[serde(borrow, default)]
    pub event_id: Option<Cow<'a, str>>,
    /// The user; required and non-empty.
    #[serde(borrow)]
    pub user_id: Cow<'a, str>,
    /// view | click | like | share | purchase (any string is accepted).
    #[serde(borrow)]
    pub event_type: Cow<'a, str>,
    /// The item interacted with.
    #[serde(borrow, default)]
    pub item_id: Option<Cow<'a, str>>,
    /// Set for purchases.
    #[serde(default)]
    pub amount: Option<f64>,
    /// Event time, milliseconds since the epoch.
    #[wafer(event_time)]
    pub event_time_ms: i64,
}

impl Interaction<'_> {
    /// The rules beyond types: `user_id` must not be empty.
    pub fn validate(self) -> Result<Self, Error> {
        if self.user_id.is_empty() {
            return Err(Error::invalid("user_id must be a non-empty string"));
        }
        Ok(self)
    }
}
