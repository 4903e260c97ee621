//! The host↔guest boundary: cost per record of a deserializer call and a
//! filter call at batch sizes 1, 64 and 1024, for ~150-byte records.
//!
//! The `noop` deserializer and `keep-all` filter do no work of their own, so
//! their time per record is the boundary's overhead: copying the batch into
//! guest memory, the call, the SDK's loop, rows or verdicts back out, and the
//! host's checks of what came back. The JSON deserializer is measured next to
//! the same code compiled natively (the Wasm tax on real work).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wafer_benches::{NativeInteractionJson, event_batch};
use wafer_runtime::Deserialize;
use wafer_wasm::{ComponentSlot, DeserializeStage, FilterStage, Limits, NoTelemetry, WasmRuntime, World};

fn stage(rt: &WasmRuntime, path: &str) -> DeserializeStage {
    let c = rt
        .load("bench", Path::new(path), World::Deserializer)
        .expect("load");
    DeserializeStage::new(
        rt,
        ComponentSlot::new(c),
        "{}".into(),
        Limits::default(),
        Arc::new(NoTelemetry),
    )
    .expect("start")
}

fn boundary(c: &mut Criterion) {
    let rt = WasmRuntime::new().expect("runtime");
    let mut noop = stage(&rt, wafer_test_guests::BENCH_NOOP);
    let mut json = stage(&rt, wafer_test_guests::INTERACTION_JSON);
    let keep = rt
        .load(
            "keep",
            Path::new(wafer_test_guests::BENCH_KEEP_ALL),
            World::Filter,
        )
        .expect("load");
    let mut filter = FilterStage::new(
        &rt,
        ComponentSlot::new(keep),
        "{}".into(),
        json.schema().clone(),
        Limits::default(),
        Arc::new(NoTelemetry),
    )
    .expect("start");

    let mut g = c.benchmark_group("boundary");
    for n in [1usize, 64, 1024] {
        let batch = event_batch(n, 150);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("deserializer-noop", n), &batch, |b, batch| {
            b.iter(|| black_box(noop.run(&batch.data, &batch.ends)))
        });
        let rows = json.run(&batch.data, &batch.ends).rows;
        g.bench_with_input(BenchmarkId::new("filter-keep-all", n), &rows, |b, rows| {
            b.iter(|| black_box(filter.run(&rows.data, &rows.ends)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("json-deserializer");
    let batch = event_batch(1024, 150);
    let mut native = NativeInteractionJson::default();
    g.throughput(Throughput::Elements(1024));
    g.bench_function("wasm", |b| {
        b.iter(|| black_box(json.run(&batch.data, &batch.ends)))
    });
    g.bench_function("native", |b| {
        b.iter(|| black_box(native.run(&batch.data, &batch.ends)))
    });
    g.finish();
}

criterion_group!(benches, boundary);
criterion_main!(benches);
