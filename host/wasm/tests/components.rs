//! The wasm crate against real components built from `guests/`: loading,
//! world checks, isolation of failing records and hot swap.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use wafer_row::{BatchBuf, Row};
use wafer_wasm::{
    ComponentSlot, DeserializeStage, FailKind, Limits, LoadError, NoTelemetry, WasmRuntime, World,
};

fn batch(lines: &[&str]) -> BatchBuf {
    let mut b = BatchBuf::new();
    for l in lines {
        b.push(l.as_bytes());
    }
    b
}

fn limits() -> Limits {
    Limits {
        call_timeout: Duration::from_millis(300),
        max_memory: 32 << 20,
        ..Limits::default()
    }
}

#[test]
fn a_component_of_another_world_is_refused_with_what_it_is() {
    let rt = WasmRuntime::new().unwrap();
    let err = rt
        .load(
            "bots",
            Path::new(wafer_test_guests::FILTER_EXAMPLE),
            World::Deserializer,
        )
        .err()
        .unwrap();
    assert!(matches!(err, LoadError::WrongWorld { .. }));
    assert!(
        err.to_string()
            .contains("it implements the `filter` world instead"),
        "{err}"
    );
    let ok = rt
        .load(
            "bots",
            Path::new(wafer_test_guests::FILTER_EXAMPLE),
            World::Filter,
        )
        .unwrap();
    assert_eq!(ok.info().name, "filter-example");
    assert!(ok.info().sdk.starts_with("wafer-sdk-rust/"));
}

#[test]
fn hot_swap_takes_effect_between_batches() {
    let rt = WasmRuntime::new().unwrap();
    let json = rt
        .load(
            "d",
            Path::new(wafer_test_guests::INTERACTION_JSON),
            World::Deserializer,
        )
        .unwrap();
    let slot = ComponentSlot::new(json);
    let mut stage =
        DeserializeStage::new(&rt, slot.clone(), "{}".into(), limits(), Arc::new(NoTelemetry)).unwrap();
    let input = batch(&[
        r#"{"user_id":"a","event_type":"click","event_time_ms":1}"#,
        r#"{"user_id":"@@TRAP@@","event_type":"click","event_time_ms":2}"#,
        r#"{"user_id":"c","event_type":"click","event_time_ms":3}"#,
    ]);
    let before = stage.run(&input.data, &input.ends);
    assert!(before.failures.is_empty(), "{:?}", before.failures);
    assert_eq!(stage.component().info().name, "interaction-json");

    // Swap in the faulty deserializer (same schema): the next batch runs on
    // it, and only the marked record fails.
    let faulty = rt
        .load("d", Path::new(wafer_test_guests::FAULTY), World::Deserializer)
        .unwrap();
    assert_eq!(slot.swap(faulty), 1);
    let after = stage.run(&input.data, &input.ends);
    assert_eq!(stage.component().info().name, "faulty");
    assert_eq!(after.failures.len(), 1);
    assert_eq!(after.failures[0].index, 1);
    assert_eq!(after.failures[0].kind, FailKind::Trap);
    let rows = after.rows.as_batch();
    let n = stage.schema().len();
    let user = stage.schema().index_of("user_id").unwrap();
    assert_eq!(Row::new(rows.get(0).unwrap(), n).str(user), Some("a"));
    assert_eq!(Row::new(rows.get(2).unwrap(), n).str(user), Some("c"));
}

#[test]
fn runaway_records_fail_alone_and_the_stage_recovers() {
    let rt = WasmRuntime::new().unwrap();
    let faulty = rt
        .load("f", Path::new(wafer_test_guests::FAULTY), World::Deserializer)
        .unwrap();
    let mut stage = DeserializeStage::new(
        &rt,
        ComponentSlot::new(faulty),
        "{}".into(),
        limits(),
        Arc::new(NoTelemetry),
    )
    .unwrap();
    let input = batch(&[
        r#"{"user_id":"@@LOOP@@","event_type":"x","event_time_ms":1}"#,
        r#"{"user_id":"ok","event_type":"x","event_time_ms":1}"#,
        r#"{"user_id":"@@OOM@@","event_type":"x","event_time_ms":1}"#,
        r#"not json"#,
    ]);
    let out = stage.run(&input.data, &input.ends);
    let kinds: Vec<(u32, FailKind)> = out.failures.iter().map(|f| (f.index, f.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            (0, FailKind::Timeout),
            (2, FailKind::Memory),
            (3, FailKind::Decode)
        ]
    );
    // The instance was replaced; a clean batch goes through whole.
    let clean = batch(&[r#"{"user_id":"ok","event_type":"x","event_time_ms":1}"#]);
    assert!(stage.run(&clean.data, &clean.ends).failures.is_empty());
}
