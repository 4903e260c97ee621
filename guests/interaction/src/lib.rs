//! The interaction event of the reference jobs (`interaction.proto`), as one
//! record type shared by the JSON, protobuf and Avro deserializers so that
//! all of them produce rows of exactly the same schema.

use std::borrow::Cow;

use serde::Deserialize;
use wafer_sdk::json::{self, Value};
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

impl<'a> Interaction<'a> {
    /// Reads and validates one interaction written as a JSON object, with
    /// `wafer_sdk::json`: the verdicts of `serde_json::from_slice` on this
    /// struct (its `Deserialize` derive) followed by [`Self::validate`], but
    /// faster, and a payload that is not UTF-8 is always a decode error (see
    /// the `json` module for the differences).
    pub fn from_json(payload: &'a [u8]) -> Result<Self, Error> {
        let mut obj = json::Object::parse(payload)?;
        let (mut event_id, mut user_id, mut event_type) = (None, None, None);
        let (mut item_id, mut amount, mut event_time_ms) = (None, None, None);
        while let Some(key) = obj.next_key()? {
            match &*key {
                "event_id" => obj.field(&mut event_id, Value::opt_str)?,
                "user_id" => obj.field(&mut user_id, Value::str)?,
                "event_type" => obj.field(&mut event_type, Value::str)?,
                "item_id" => obj.field(&mut item_id, Value::opt_str)?,
                "amount" => obj.field(&mut amount, Value::opt_f64)?,
                "event_time_ms" => obj.field(&mut event_time_ms, Value::i64)?,
                _ => obj.skip_value()?,
            }
        }
        // Missing fields before trailing characters, in declaration order,
        // as serde reports them.
        let record = Interaction {
            event_id: event_id.flatten(),
            user_id: json::required(user_id, "user_id")?,
            event_type: json::required(event_type, "event_type")?,
            item_id: item_id.flatten(),
            amount: amount.flatten(),
            event_time_ms: json::required(event_time_ms, "event_time_ms")?,
        };
        obj.finish()?;
        record.validate()
    }

    /// The rules beyond types: `user_id` must not be empty.
    pub fn validate(self) -> Result<Self, Error> {
        if self.user_id.is_empty() {
            return Err(Error::invalid("user_id must be a non-empty string"));
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the JSON guest did before `from_json`: serde_json and the derive.
    fn reference(payload: &[u8]) -> Result<Interaction<'_>, Error> {
        serde_json::from_slice::<Interaction<'_>>(payload)
            .map_err(Error::from)
            .and_then(Interaction::validate)
    }

    #[test]
    fn from_json_reads_a_record() {
        let payload = br#"{"event_id":"e1","user_id":"u\u00e9","event_type":"purchase","item_id":null,
            "amount":19.99,"event_time_ms":1700000000000,"extra":{"nested":[1,2,{"x":null}]}}"#;
        let want = Interaction {
            event_id: Some("e1".into()),
            user_id: "ué".into(),
            event_type: "purchase".into(),
            item_id: None,
            amount: Some(19.99),
            event_time_ms: 1_700_000_000_000,
        };
        assert_eq!(Interaction::from_json(payload).unwrap(), want);
        assert_eq!(reference(payload).unwrap(), want);
        let e =
            Interaction::from_json(br#"{"user_id":"","event_type":"view","event_time_ms":1}"#).unwrap_err();
        assert_eq!(e.message, "user_id must be a non-empty string");
    }

    /// `from_json` against serde_json on many inputs: same records, same
    /// kinds of error (see `json-diff` for the two documented exceptions).
    #[test]
    fn from_json_agrees_with_serde_json() {
        let seeds: &[&[(&str, &str)]] = &[
            &[
                ("event_id", r#""ev-1""#),
                ("user_id", r#""user-1""#),
                ("event_type", r#""click""#),
                ("item_id", r#""item-9""#),
                ("amount", "19.99"),
                ("event_time_ms", "1700000000000"),
            ],
            &[
                ("user_id", r#""u""#),
                ("event_type", r#""view""#),
                ("event_time_ms", "0"),
            ],
            &[
                ("event_time_ms", "-5"),
                ("amount", "-1e-3"),
                ("item_id", "null"),
                ("event_type", r#""\u00e9\ud83d\ude00\n""#),
                ("user_id", r#""ключ 😀""#),
                ("event_id", "null"),
            ],
        ];
        let counts = json_diff::run(seeds, 20_000, |p| {
            json_diff::pair(reference(p), Interaction::from_json(p))
        });
        eprintln!("{counts:?}");
        assert!(
            counts.ok > 1_000 && counts.invalid > 1_000 && counts.decode > 10_000,
            "{counts:?}"
        );
        assert!(counts.not_utf8 > 100 && counts.arrays > 10, "{counts:?}");
    }
}
