//! Filter component: drops records whose `user_id` starts with one of the
//! configured prefixes (bot and test traffic). Config:
//! `{"prefixes": ["bot-", "test-"]}` (the default).

use serde::Deserialize;
use wafer_sdk::row::Schema;
use wafer_sdk::{Config, Error, Filter, Record};

/// The only field this filter reads; any input with a `user_id` works.
#[derive(Record)]
struct User<'a> {
    user_id: &'a str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_prefixes")]
    prefixes: Vec<String>,
}

fn default_prefixes() -> Vec<String> {
    vec!["bot-".into(), "test-".into()]
}

struct DropBots {
    prefixes: Vec<String>,
}

impl Filter for DropBots {
    type Record<'a> = User<'a>;

    fn new(config: &Config, _input: &Schema) -> Result<Self, String> {
        let settings: Settings = config.parse()?;
        Ok(DropBots {
            prefixes: settings.prefixes,
        })
    }

    fn keep(&mut self, record: &User<'_>) -> Result<bool, Error> {
        Ok(!self
            .prefixes
            .iter()
            .any(|p| record.user_id.starts_with(p.as_str())))
    }
}

wafer_sdk::filter!(DropBots);
