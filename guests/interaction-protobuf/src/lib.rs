//! Deserializer component for interaction events encoded as the protobuf
//! message `reference.v1.Interaction` (`guests/interaction-protobuf/interaction.proto`).
//!
//! proto3 cannot tell an unset field from its default, so the required fields
//! are checked by value: an empty `user_id` or `event_type`, or an
//! `event_time_ms` of 0, means the field is missing and the record is invalid.
//! An `amount` of 0 is treated as absent (it is only set on purchases).

use std::borrow::Cow;

use interaction::Interaction;
use prost::Message;
use wafer_sdk::{Config, Deserializer, Error};

/// `reference.v1.Interaction`, field for field.
#[derive(Clone, PartialEq, Message)]
struct InteractionPb {
    #[prost(string, tag = "1")]
    event_id: String,
    #[prost(string, tag = "2")]
    user_id: String,
    #[prost(string, tag = "3")]
    event_type: String,
    #[prost(string, tag = "4")]
    item_id: String,
    #[prost(double, tag = "5")]
    amount: f64,
    #[prost(int64, tag = "6")]
    event_time_ms: i64,
}

struct InteractionProtobuf;

fn non_empty(s: String) -> Option<Cow<'static, str>> {
    (!s.is_empty()).then_some(Cow::Owned(s))
}

impl Deserializer for InteractionProtobuf {
    type Record<'a> = Interaction<'a>;

    fn new(_config: &Config) -> Result<Self, String> {
        Ok(InteractionProtobuf)
    }

    fn deserialize<'a>(&mut self, payload: &'a [u8]) -> Result<Interaction<'a>, Error> {
        let m = InteractionPb::decode(payload).map_err(Error::decode)?;
        if m.event_type.is_empty() {
            return Err(Error::invalid("event_type is missing"));
        }
        if m.event_time_ms == 0 {
            return Err(Error::invalid("event_time_ms is missing"));
        }
        Interaction {
            event_id: non_empty(m.event_id),
            user_id: Cow::Owned(m.user_id),
            event_type: Cow::Owned(m.event_type),
            item_id: non_empty(m.item_id),
            amount: (m.amount != 0.0).then_some(m.amount),
            event_time_ms: m.event_time_ms,
        }
        .validate()
    }
}

wafer_sdk::deserializer!(InteractionProtobuf);
