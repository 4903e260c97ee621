//! The two inputs of the training-samples reference job (REFERENCE_JOBS.md,
//! job 2): view events and engagement events, as record types shared by
//! their JSON deserializers, with the validity rules beyond types.

use std::borrow::Cow;

use serde::Deserialize;
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

impl View<'_> {
    /// Ids must not be empty.
    pub fn validate(self) -> Result<Self, Error> {
        non_empty("view_id", &self.view_id)?;
        non_empty("user_id", &self.user_id)?;
        non_empty("item_id", &self.item_id)?;
        Ok(self)
    }
}

impl Engagement<'_> {
    /// Ids must not be empty.
    pub fn validate(self) -> Result<Self, Error> {
        non_empty("user_id", &self.user_id)?;
        non_empty("item_id", &self.item_id)?;
        Ok(self)
    }
}
