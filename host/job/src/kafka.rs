//! Validation of the Kafka source and sink sections of a job file.
//!
//! Kept apart from the rest of validation because it only checks settings:
//! whether brokers are reachable is found out when the job starts.

use std::collections::BTreeSet;
use std::time::Duration;

use wafer_core::time::parse_timestamp_ms;

use crate::spec::{KafkaSinkSpec, KafkaSourceSpec, ScalarString};
use crate::{KafkaSink, KafkaSource, KafkaStart};

/// Where in the job and what is wrong.
type Invalid = (String, String);

/// Properties the host sets itself: a user value would break its guarantees.
const OWNED_CONSUMER: &[&str] = &["enable.auto.commit", "group.id", "bootstrap.servers"];
const OWNED_PRODUCER: &[&str] = &["transactional.id", "bootstrap.servers"];

fn properties(
    at: &str,
    props: &std::collections::BTreeMap<String, ScalarString>,
    owned: &[&str],
) -> Result<Vec<(String, String)>, Invalid> {
    let mut out = Vec::new();
    for (k, v) in props {
        if owned.contains(&k.as_str()) {
            return Err((
                format!("{at}.properties.{k}"),
                "is set by wafer itself; use the section's own key instead".into(),
            ));
        }
        out.push((k.clone(), v.0.clone()));
    }
    Ok(out)
}

fn boolean(at: &str, v: &Option<ScalarString>) -> Result<bool, Invalid> {
    match v.as_ref().map(|s| s.0.trim().to_ascii_lowercase()) {
        None => Ok(false),
        Some(s) if s.is_empty() || s == "false" || s == "no" || s == "0" => Ok(false),
        Some(s) if s == "true" || s == "yes" || s == "1" => Ok(true),
        Some(s) => Err((at.to_string(), format!("`{s}` is not true or false"))),
    }
}

/// Validates a source's `kafka` section.
pub(crate) fn kafka_source(job: &str, at: &str, k: &KafkaSourceSpec) -> Result<KafkaSource, Invalid> {
    if k.brokers.trim().is_empty() {
        return Err((format!("{at}.kafka.brokers"), "empty broker list".into()));
    }
    if k.topics.0.is_empty() {
        return Err((format!("{at}.kafka.topics"), "needs at least one topic".into()));
    }
    let group = match &k.group {
        Some(g) if !g.trim().is_empty() => g.trim().to_string(),
        _ => format!("wafer-{job}"),
    };
    let mut topics = k.topics.0.clone();
    topics.sort();
    topics.dedup();
    let id = match &k.id {
        Some(id) if !id.trim().is_empty() => id.trim().to_string(),
        _ => format!("kafka:{}@{group}", topics.join(",")),
    };
    let start = match k.start.as_ref().map(|s| s.0.trim()) {
        None | Some("") | Some("committed") => KafkaStart::Committed,
        Some("earliest") => KafkaStart::Earliest,
        Some("latest") => KafkaStart::Latest,
        Some(t) => KafkaStart::Timestamp(parse_timestamp_ms(t).map_err(|e| {
            (
                format!("{at}.kafka.start"),
                format!("`{t}` is not committed, earliest, latest or a timestamp: {e}"),
            )
        })?),
    };
    // wafer's own fetch switch (see the Kafka source), read by the host.
    if let Some(v) = k.properties.get("wafer.fetch")
        && !matches!(v.0.trim(), "direct" | "librdkafka")
    {
        return Err((
            format!("{at}.kafka.properties.wafer.fetch"),
            format!("`{}` is neither `direct` nor `librdkafka`", v.0),
        ));
    }
    Ok(KafkaSource {
        brokers: k.brokers.trim().to_string(),
        topics,
        group,
        id,
        start,
        bounded: boolean(&format!("{at}.kafka.bounded"), &k.bounded)?,
        connect_timeout: k.connect_timeout.unwrap_or(Duration::from_secs(30)),
        properties: properties(&format!("{at}.kafka"), &k.properties, OWNED_CONSUMER)?,
    })
}

/// Validates the sink's `kafka` section.
pub(crate) fn kafka_sink(
    job: &str,
    k: &KafkaSinkSpec,
    job_key: &Option<Vec<String>>,
) -> Result<KafkaSink, Invalid> {
    let at = "sink.kafka";
    if k.brokers.trim().is_empty() {
        return Err((format!("{at}.brokers"), "empty broker list".into()));
    }
    let compression = k.compression.clone().unwrap_or_else(|| "lz4".into());
    if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&compression.as_str()) {
        return Err((
            format!("{at}.compression"),
            format!("`{compression}` is not none, gzip, snappy, lz4 or zstd"),
        ));
    }
    let exactly_once = match k.delivery.as_deref().map(str::trim) {
        None | Some("") | Some("at-least-once") => false,
        Some("exactly-once") => true,
        Some(d) => {
            return Err((
                format!("{at}.delivery"),
                format!("`{d}` is not at-least-once or exactly-once"),
            ));
        }
    };
    let key_by = match &k.key_by {
        Some(k) => k.0.clone(),
        None => job_key.clone().unwrap_or_default(),
    };
    let commit_interval = k.commit_interval.unwrap_or(Duration::from_secs(1));
    if commit_interval.is_zero() {
        return Err((format!("{at}.commit_interval"), "must be more than zero".into()));
    }
    Ok(KafkaSink {
        brokers: k.brokers.trim().to_string(),
        outputs: k
            .outputs
            .as_ref()
            .map(|o| o.0.iter().cloned().collect::<BTreeSet<_>>()),
        topics: k.topics.clone(),
        topic_prefix: k.topic_prefix.clone().unwrap_or_default(),
        key_by,
        compression,
        exactly_once,
        transactional_id: k
            .transactional_id
            .clone()
            .unwrap_or_else(|| format!("wafer-{job}")),
        commit_interval,
        properties: properties(at, &k.properties, OWNED_PRODUCER)?,
    })
}
