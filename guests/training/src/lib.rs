//! The two inputs of the training-samples reference job (REFERENCE_JOBS.md,
//! job 2): view events and engagement events, as record types shared by
//! their JSON deserializers, with the validity rules beyond types.

use std::borrow::Cow;

use serde::Deserialize;
use wafer_sdk::json::{self, Value};
use wafer_sdk::{Error, Record};

/// A user saw an item.
#[derive(Debug, Clone, PartialEq, Record, Deserialize)]
pub struct View<'a> {
    /// Unique id of the view; the key of its training sample.
    #[serde(borrow)]
    pub view_id: Cow<'a, str>,
    /// The user.
    #[serde(borrow)]
    pub user_id: Cow<'a, str>,
    /// The item.
    #[serde(borrow)]
    pub item_id: Cow<'a, str>,
    /// Event time, milliseconds since the epoch.
    #[wafer(event_time)]
    pub event_time_ms: i64,
}

/// A user engaged with an item: `like`, `share` or `comment` (other kinds
/// are valid records that no label counts).
#[derive(Debug, Clone, PartialEq, Record, Deserialize)]
pub struct Engagement<'a> {
    /// The user.
    #[serde(borrow)]
    pub user_id: Cow<'a, str>,
    /// The item.
    #[serde(borrow)]
    pub item_id: Cow<'a, str>,
    /// What the user did.
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
    /// Event time, milliseconds since the epoch.
    #[wafer(event_time)]
    pub event_time_ms: i64,
}

fn non_empty(field: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::invalid(format!("{field} must be a non-empty string")));
    }
    Ok(())
}

impl<'a> View<'a> {
    /// Reads and validates one view written as a JSON object, with
    /// `wafer_sdk::json`: the verdicts of `serde_json::from_slice` on this
    /// struct followed by [`Self::validate`], but faster, and a payload that
    /// is not UTF-8 is always a decode error (see the `json` module).
    pub fn from_json(payload: &'a [u8]) -> Result<Self, Error> {
        let mut obj = json::Object::parse(payload)?;
        let (mut view_id, mut user_id, mut item_id, mut event_time_ms) = (None, None, None, None);
        while let Some(key) = obj.next_key()? {
            match &*key {
                "view_id" => obj.field(&mut view_id, Value::str)?,
                "user_id" => obj.field(&mut user_id, Value::str)?,
                "item_id" => obj.field(&mut item_id, Value::str)?,
                "event_time_ms" => obj.field(&mut event_time_ms, Value::i64)?,
                _ => obj.skip_value()?,
            }
        }
        // Missing fields before trailing characters, as serde reports them.
        let record = View {
            view_id: json::required(view_id, "view_id")?,
            user_id: json::required(user_id, "user_id")?,
            item_id: json::required(item_id, "item_id")?,
            event_time_ms: json::required(event_time_ms, "event_time_ms")?,
        };
        obj.finish()?;
        record.validate()
    }

    /// Ids must not be empty.
    pub fn validate(self) -> Result<Self, Error> {
        non_empty("view_id", &self.view_id)?;
        non_empty("user_id", &self.user_id)?;
        non_empty("item_id", &self.item_id)?;
        Ok(self)
    }
}

impl<'a> Engagement<'a> {
    /// Reads and validates one engagement written as a JSON object, with
    /// `wafer_sdk::json`: the verdicts of `serde_json::from_slice` on this
    /// struct followed by [`Self::validate`], but faster, and a payload that
    /// is not UTF-8 is always a decode error (see the `json` module).
    pub fn from_json(payload: &'a [u8]) -> Result<Self, Error> {
        let mut obj = json::Object::parse(payload)?;
        let (mut user_id, mut item_id, mut kind, mut event_time_ms) = (None, None, None, None);
        while let Some(key) = obj.next_key()? {
            match &*key {
                "user_id" => obj.field(&mut user_id, Value::str)?,
                "item_id" => obj.field(&mut item_id, Value::str)?,
                "kind" => obj.field(&mut kind, Value::str)?,
                "event_time_ms" => obj.field(&mut event_time_ms, Value::i64)?,
                _ => obj.skip_value()?,
            }
        }
        // Missing fields before trailing characters, as serde reports them.
        let record = Engagement {
            user_id: json::required(user_id, "user_id")?,
            item_id: json::required(item_id, "item_id")?,
            kind: json::required(kind, "kind")?,
            event_time_ms: json::required(event_time_ms, "event_time_ms")?,
        };
        obj.finish()?;
        record.validate()
    }

    /// Ids must not be empty.
    pub fn validate(self) -> Result<Self, Error> {
        non_empty("user_id", &self.user_id)?;
        non_empty("item_id", &self.item_id)?;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the JSON guests did before `from_json`: serde_json and the derive.
    fn view(payload: &[u8]) -> Result<View<'_>, Error> {
        serde_json::from_slice::<View<'_>>(payload)
            .map_err(Error::from)
            .and_then(View::validate)
    }

    fn engagement(payload: &[u8]) -> Result<Engagement<'_>, Error> {
        serde_json::from_slice::<Engagement<'_>>(payload)
            .map_err(Error::from)
            .and_then(Engagement::validate)
    }

    #[test]
    fn from_json_reads_records() {
        let v =
            View::from_json(br#"{"view_id":"v1","user_id":"u","item_id":"i","event_time_ms":5}"#).unwrap();
        assert_eq!(
            (&*v.view_id, &*v.user_id, &*v.item_id, v.event_time_ms),
            ("v1", "u", "i", 5)
        );
        let e = Engagement::from_json(br#" {"kind":"like","user_id":"u","item_id":"i","event_time_ms":-1} "#)
            .unwrap();
        assert_eq!(
            (&*e.user_id, &*e.item_id, &*e.kind, e.event_time_ms),
            ("u", "i", "like", -1)
        );
        let err =
            View::from_json(br#"{"view_id":"v1","user_id":"u","item_id":"","event_time_ms":5}"#).unwrap_err();
        assert_eq!(err.message, "item_id must be a non-empty string");
        let err = Engagement::from_json(br#"{"user_id":"u","item_id":"i","event_time_ms":5}"#).unwrap_err();
        assert_eq!(err.message, "missing field `kind`");
    }

    /// `from_json` against serde_json on many inputs: same records, same
    /// kinds of error (see `json-diff` for the two documented exceptions).
    #[test]
    fn view_from_json_agrees_with_serde_json() {
        let seeds: &[&[(&str, &str)]] = &[
            &[
                ("view_id", r#""v-1""#),
                ("user_id", r#""user-1""#),
                ("item_id", r#""item-9""#),
                ("event_time_ms", "1700000000000"),
            ],
            &[
                ("event_time_ms", "0"),
                ("item_id", r#""\u00e9\ud83d\ude00""#),
                ("user_id", r#""ключ""#),
                ("view_id", r#""a\"b""#),
            ],
        ];
        let counts = json_diff::run(seeds, 10_000, |p| json_diff::pair(view(p), View::from_json(p)));
        eprintln!("{counts:?}");
        assert!(
            counts.ok > 500 && counts.invalid > 1_000 && counts.decode > 5_000,
            "{counts:?}"
        );
    }

    #[test]
    fn engagement_from_json_agrees_with_serde_json() {
        let seeds: &[&[(&str, &str)]] = &[
            &[
                ("user_id", r#""user-1""#),
                ("item_id", r#""item-9""#),
                ("kind", r#""like""#),
                ("event_time_ms", "1700000000000"),
            ],
            &[
                ("kind", r#""""#),
                ("event_time_ms", "-9223372036854775808"),
                ("item_id", r#""i""#),
                ("user_id", r#""\/u""#),
            ],
        ];
        let counts = json_diff::run(seeds, 10_000, |p| {
            json_diff::pair(engagement(p), Engagement::from_json(p))
        });
        eprintln!("{counts:?}");
        assert!(
            counts.ok > 500 && counts.invalid > 1_000 && counts.decode > 5_000,
            "{counts:?}"
        );
    }
}
