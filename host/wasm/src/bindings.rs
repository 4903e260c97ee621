//! Host-side bindings of the `wafer:udf` worlds, generated from `wit/`.
//!
//! The processor world is generated first and owns the shared interfaces
//! (`types`, `log`, `metrics`, `state`, `timers`, `processing`); the other
//! worlds reuse them through `with`, so the host implements each import once.
#![allow(missing_docs)]

pub mod processor {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "processor",
        // State and timer calls can fail (a bad index, a full disk): they
        // trap the guest rather than return garbage.
        imports: {
            "wafer:udf/state": trappable,
            "wafer:udf/timers": trappable,
        },
    });
}

pub mod co_processor {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "co-processor",
        with: {
            "wafer:udf/types": super::processor::wafer::udf::types,
            "wafer:udf/log": super::processor::wafer::udf::log,
            "wafer:udf/metrics": super::processor::wafer::udf::metrics,
            "wafer:udf/state": super::processor::wafer::udf::state,
            "wafer:udf/timers": super::processor::wafer::udf::timers,
            "wafer:udf/processing": super::processor::wafer::udf::processing,
        },
    });
}

pub mod deserializer {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "deserializer",
        with: {
            "wafer:udf/types": super::processor::wafer::udf::types,
            "wafer:udf/log": super::processor::wafer::udf::log,
            "wafer:udf/metrics": super::processor::wafer::udf::metrics,
        },
    });
}

pub mod filter {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "filter",
        with: {
            "wafer:udf/types": super::processor::wafer::udf::types,
            "wafer:udf/log": super::processor::wafer::udf::log,
            "wafer:udf/metrics": super::processor::wafer::udf::metrics,
        },
    });
}

pub use processor::wafer::udf::{log, metrics, processing, state, timers, types};
