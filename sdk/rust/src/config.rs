//! A stage's `config` from the job file, handed to the component as JSON.

use serde::de::DeserializeOwned;

/// The `config` mapping of a stage in the job file.
#[derive(Debug, Clone)]
pub struct Config {
    raw: String,
    value: serde_json::Value,
}

impl Config {
    /// Parses the JSON text the host passes to `init` (empty means `{}`).
    pub fn from_json(raw: &str) -> Result<Self, String> {
        let value = if raw.trim().is_empty() {
            serde_json::Value::Object(Default::default())
        } else {
            serde_json::from_str(raw).map_err(|e| format!("config is not valid JSON: {e}"))?
        };
        Ok(Config {
            raw: raw.to_string(),
            value,
        })
    }

    /// The raw JSON text.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The parsed JSON value.
    pub fn value(&self) -> &serde_json::Value {
        &self.value
    }

    /// Deserializes the whole config into `T` (use `#[serde(deny_unknown_fields)]`
    /// on `T` to reject typos).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_value(self.value.clone()).map_err(|e| format!("bad config: {e}"))
    }

    /// Deserializes one key, `None` if it is absent.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, String> {
        match self.value.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| format!("bad config key `{key}`: {e}")),
        }
    }
}
