//! The wafer guest SDK for Rust.
//!
//! A wafer component is a Wasm component implementing one world of the
//! `wafer:udf` contract (`wit/wafer.wit`). With this SDK it is a plain Rust
//! type implementing one trait, plus one macro call:
//!
//! ```text
//! use wafer_sdk::{Config, Error, Record, Deserializer};
//!
//! #[derive(Record, serde::Deserialize)]
//! struct Click<'a> {
//!     user_id: &'a str,
//!     #[wafer(event_time)]
//!     event_time_ms: i64,
//! }
//!
//! struct Clicks;
//!
//! impl Deserializer for Clicks {
//!     type Record<'a> = Click<'a>;
//!     fn new(_config: &Config) -> Result<Self, String> { Ok(Clicks) }
//!     fn deserialize<'a>(&mut self, payload: &'a [u8]) -> Result<Click<'a>, Error> {
//!         Ok(serde_json::from_slice(payload)?)
//!     }
//! }
//!
//! wafer_sdk::deserializer!(Clicks);
//! ```
//!
//! For JSON records, [`json`] is a faster reader than `serde_json` with the
//! same verdicts on bad input.
//!
//! Build it with `cargo build --release --target wasm32-wasip2`; the `.wasm`
//! file in `target/wasm32-wasip2/release/` is the component to name in a job.
//!
//! Under the hood the host hands the guest whole batches as flat buffers and
//! gets one result per record back; the SDK loops over the batch, calls your
//! function per record and encodes records in the wafer row format. A panic
//! traps the instance; the host then re-runs the batch record by record to
//! dead-letter only the record that caused it, with the panic message.

mod config;
mod error;
mod field;
pub mod json;
pub mod log;
pub mod metrics;
mod process;

pub use config::Config;
pub use error::{Error, ErrorKind};
pub use field::{FieldMap, FieldValue, ReadField};
pub use process::{
    CoProcessor, Context, Key, ListState, MapState, Output, Processor, Setup, StateCodec, TimeDomain, Timer,
    ValueState,
};
pub use wafer_row as row;
pub use wafer_sdk_macros::Record;

use wafer_row::{Row, RowWriter, Schema, SchemaError};

/// This SDK's name and version, stamped into every component it builds.
pub const SDK: &str = concat!("wafer-sdk-rust/", env!("CARGO_PKG_VERSION"));

/// A struct that can be written as a row. Derive it with `#[derive(Record)]`.
pub trait Record {
    /// The schema of the rows this type is written as.
    fn schema() -> Result<Schema, SchemaError>;
    /// Writes the value's fields into a row.
    fn write(&self, row: &mut RowWriter<'_>);
}

/// A struct that can be read from a row of any schema that has its fields.
/// Derive it with `#[derive(Record)]`.
pub trait FromRow<'a>: Sized {
    /// Locates the struct's fields in `schema`; fails if one is missing or
    /// has another type.
    fn bind(schema: &Schema) -> Result<FieldMap, String>;
    /// Reads one row.
    fn read(row: &Row<'a>, map: &FieldMap) -> Result<Self, String>;
}

/// Turns raw payloads (a Kafka message value, a line of a file) into records.
pub trait Deserializer: Sized + 'static {
    /// The record produced; it may borrow from the payload.
    type Record<'a>: Record;

    /// Creates the deserializer from the `config` of its stage in the job.
    fn new(config: &Config) -> Result<Self, String>;

    /// Decodes one payload. Return [`Error::decode`] for bytes that are not
    /// in the format and [`Error::invalid`] for records that break the rules
    /// (missing or mistyped fields); both go to the dead-letter output.
    fn deserialize<'a>(&mut self, payload: &'a [u8]) -> Result<Self::Record<'a>, Error>;
}

/// Decides which records go on.
pub trait Filter: Sized + 'static {
    /// The fields the filter reads, looked up by name in the input.
    type Record<'a>: FromRow<'a>;

    /// Creates the filter from its `config`; `input` is the schema of the rows
    /// it will see.
    fn new(config: &Config, input: &Schema) -> Result<Self, String>;

    /// `Ok(true)` keeps the record, `Ok(false)` drops it, an error sends it to
    /// the dead-letter output.
    fn keep(&mut self, record: &Self::Record<'_>) -> Result<bool, Error>;
}

/// Exports a [`Deserializer`] as a component of the `deserializer` world.
#[macro_export]
macro_rules! deserializer {
    ($ty:ty) => {
        #[doc(hidden)]
        #[allow(missing_docs, unsafe_code, clippy::all, unused)]
        mod __wafer_deserializer_export {
            use super::*;
            $crate::__private::__world_bindings!(deserializer);
            $crate::__common_glue!();
            use exports::wafer::udf::deserialize as api;

            ::std::thread_local! {
                static STATE: ::core::cell::RefCell<::core::option::Option<$crate::__private::DeserializerState<$ty>>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            struct Export;

            impl api::Guest for Export {
                fn info() -> t::ComponentInfo {
                    component_info()
                }

                fn init(config: ::std::string::String) -> ::core::result::Result<t::Schema, ::std::string::String> {
                    install_host();
                    let state = $crate::__private::DeserializerState::<$ty>::new(&config)?;
                    let schema = schema_to_wit(state.schema());
                    STATE.with(|s| *s.borrow_mut() = ::core::option::Option::Some(state));
                    ::core::result::Result::Ok(schema)
                }

                fn deserialize(input: t::Payloads) -> api::Decoded {
                    let out = STATE.with(|s| match s.borrow_mut().as_mut() {
                        ::core::option::Option::Some(state) => state.run(&input.data, &input.ends),
                        ::core::option::Option::None => $crate::__private::BatchOutput::all_failed(input.ends.len(), "deserializer used before init"),
                    });
                    api::Decoded {
                        rows: t::Rows { data: out.data, ends: out.ends },
                        errors: out.errors.into_iter().map(error_to_wit).collect(),
                    }
                }
            }

            export!(Export);
        }
    };
}

/// Exports a [`Filter`] as a component of the `filter` world.
#[macro_export]
macro_rules! filter {
    ($ty:ty) => {
        #[doc(hidden)]
        #[allow(missing_docs, unsafe_code, clippy::all, unused)]
        mod __wafer_filter_export {
            use super::*;
            $crate::__private::__world_bindings!(filter);
            $crate::__common_glue!();
            use exports::wafer::udf::filter_rows as api;

            ::std::thread_local! {
                static STATE: ::core::cell::RefCell<::core::option::Option<$crate::__private::FilterState<$ty>>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            struct Export;

            impl api::Guest for Export {
                fn info() -> t::ComponentInfo {
                    component_info()
                }

                fn init(config: ::std::string::String, input: t::Schema) -> ::core::result::Result<(), ::std::string::String> {
                    install_host();
                    let schema = schema_from_wit(input)?;
                    let state = $crate::__private::FilterState::<$ty>::new(&config, schema)?;
                    STATE.with(|s| *s.borrow_mut() = ::core::option::Option::Some(state));
                    ::core::result::Result::Ok(())
                }

                fn filter(input: t::Rows) -> api::Verdicts {
                    let (keep, errors) = STATE.with(|s| match s.borrow_mut().as_mut() {
                        ::core::option::Option::Some(state) => state.run(&input.data, &input.ends),
                        ::core::option::Option::None => {
                            let out = $crate::__private::BatchOutput::all_failed(input.ends.len(), "filter used before init");
                            (::std::vec![0u8; input.ends.len()], out.errors)
                        }
                    });
                    api::Verdicts { keep, errors: errors.into_iter().map(error_to_wit).collect() }
                }
            }

            export!(Export);
        }
    };
}

/// Exports a [`Processor`] as a component of the `processor` world.
#[macro_export]
macro_rules! processor {
    ($ty:ty) => {
        #[doc(hidden)]
        #[allow(missing_docs, unsafe_code, clippy::all, unused)]
        mod __wafer_processor_export {
            use super::*;
            $crate::__private::__world_bindings!(processor);
            $crate::__common_glue!();
            $crate::__proc_glue!();
            use exports::wafer::udf::process as api;

            ::std::thread_local! {
                static STATE: ::core::cell::RefCell<::core::option::Option<$crate::__private::ProcessorState<$ty>>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            struct Export;

            impl api::Guest for Export {
                fn info() -> t::ComponentInfo {
                    component_info()
                }

                fn init(
                    config: ::std::string::String,
                    input: t::Schema,
                    key: t::Schema,
                ) -> ::core::result::Result<p::ProcessorSpec, ::std::string::String> {
                    install_host();
                    install_proc_host();
                    let state = $crate::__private::ProcessorState::<$ty>::new(
                        &config,
                        schema_from_wit(input)?,
                        schema_from_wit(key)?,
                    )?;
                    let spec = spec_to_wit(state.setup());
                    STATE.with(|s| *s.borrow_mut() = ::core::option::Option::Some(state));
                    ::core::result::Result::Ok(spec)
                }

                fn process(batch: p::KeyedRows) -> p::Output {
                    STATE.with(|s| match s.borrow_mut().as_mut() {
                        ::core::option::Option::Some(st) => {
                            let (emitted, errors) = st.process(
                                (&batch.rows.data, &batch.rows.ends),
                                (&batch.keys.data, &batch.keys.ends),
                                &batch.group_ends,
                            );
                            output_to_wit(emitted, errors)
                        }
                        ::core::option::Option::None => not_initialised(batch.rows.ends.len()),
                    })
                }

                fn on_timer(timers: p::FiredTimers) -> p::Output {
                    let domains = domains_from_wit(&timers.domains);
                    STATE.with(|s| match s.borrow_mut().as_mut() {
                        ::core::option::Option::Some(st) => {
                            let (emitted, errors) =
                                st.on_timer((&timers.keys.data, &timers.keys.ends), &timers.times, &domains);
                            output_to_wit(emitted, errors)
                        }
                        ::core::option::Option::None => not_initialised(0),
                    })
                }
            }

            export!(Export);
        }
    };
}

/// Exports a [`CoProcessor`] as a component of the `co-processor` world.
#[macro_export]
macro_rules! co_processor {
    ($ty:ty) => {
        #[doc(hidden)]
        #[allow(missing_docs, unsafe_code, clippy::all, unused)]
        mod __wafer_co_processor_export {
            use super::*;
            $crate::__private::__world_bindings!(co_processor);
            $crate::__common_glue!();
            $crate::__proc_glue!();
            use exports::wafer::udf::co_process as api;

            ::std::thread_local! {
                static STATE: ::core::cell::RefCell<::core::option::Option<$crate::__private::CoProcessorState<$ty>>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            struct Export;

            impl api::Guest for Export {
                fn info() -> t::ComponentInfo {
                    component_info()
                }

                fn init(
                    config: ::std::string::String,
                    inputs: ::std::vec::Vec<api::Input>,
                    key: t::Schema,
                ) -> ::core::result::Result<p::ProcessorSpec, ::std::string::String> {
                    install_host();
                    install_proc_host();
                    let mut named = ::std::vec::Vec::new();
                    for i in inputs {
                        named.push((i.name, schema_from_wit(i.schema)?));
                    }
                    let state = $crate::__private::CoProcessorState::<$ty>::new(&config, named, schema_from_wit(key)?)?;
                    let spec = spec_to_wit(state.setup());
                    STATE.with(|s| *s.borrow_mut() = ::core::option::Option::Some(state));
                    ::core::result::Result::Ok(spec)
                }

                fn process(input: u32, batch: p::KeyedRows) -> p::Output {
                    STATE.with(|s| match s.borrow_mut().as_mut() {
                        ::core::option::Option::Some(st) => {
                            let (emitted, errors) = st.process(
                                input,
                                (&batch.rows.data, &batch.rows.ends),
                                (&batch.keys.data, &batch.keys.ends),
                                &batch.group_ends,
                            );
                            output_to_wit(emitted, errors)
                        }
                        ::core::option::Option::None => not_initialised(batch.rows.ends.len()),
                    })
                }

                fn on_timer(timers: p::FiredTimers) -> p::Output {
                    let domains = domains_from_wit(&timers.domains);
                    STATE.with(|s| match s.borrow_mut().as_mut() {
                        ::core::option::Option::Some(st) => {
                            let (emitted, errors) =
                                st.on_timer((&timers.keys.data, &timers.keys.ends), &timers.times, &domains);
                            output_to_wit(emitted, errors)
                        }
                        ::core::option::Option::None => not_initialised(0),
                    })
                }
            }

            export!(Export);
        }
    };
}

/// Glue shared by the two processor worlds: state and timer imports,
/// declarations and outputs.
#[doc(hidden)]
#[macro_export]
macro_rules! __proc_glue {
    () => {
        use wafer::udf::processing as p;

        fn install_proc_host() {
            use wafer::udf::state as ws;
            use wafer::udf::timers as wt;
            fn domain(d: $crate::TimeDomain) -> wt::TimeDomain {
                match d {
                    $crate::TimeDomain::EventTime => wt::TimeDomain::EventTime,
                    $crate::TimeDomain::ProcessingTime => wt::TimeDomain::ProcessingTime,
                }
            }
            $crate::__private::install_proc_host($crate::__private::ProcHostFns {
                value_get_all: |s| {
                    let v = ws::value_get_all(s);
                    $crate::__private::ValueBatch {
                        data: v.data,
                        ends: v.ends,
                        present: v.present,
                    }
                },
                value_write_all: |w| {
                    ws::value_write_all(&ws::ValueWrites {
                        states: w.states,
                        keys: w.keys,
                        values: ws::Values {
                            data: w.values.data,
                            ends: w.values.ends,
                            present: w.values.present,
                        },
                    })
                },
                list_get: |s, k| ws::list_get(s, k),
                list_append: |s, k, v| ws::list_append(s, k, v),
                list_set: |s, k, v| ws::list_set(s, k, v),
                map_get: |s, k, m| ws::map_get(s, k, m),
                map_put: |s, k, m, v| ws::map_put(s, k, m, v),
                map_remove: |s, k, m| ws::map_remove(s, k, m),
                map_entries: |s, k| ws::map_entries(s, k),
                clear: |s, k| ws::clear(s, k),
                timer_change_all: |changes| {
                    let changes: ::std::vec::Vec<wt::TimerChange> = changes
                        .into_iter()
                        .map(|c| wt::TimerChange {
                            key: c.key,
                            domain: domain(c.domain),
                            time: c.time,
                            delete: c.delete,
                        })
                        .collect();
                    wt::change_all(&changes)
                },
                watermark: || wt::watermark(),
                processing_time: || wt::processing_time(),
            });
        }

        fn spec_to_wit(setup: &$crate::Setup) -> p::ProcessorSpec {
            p::ProcessorSpec {
                states: setup
                    .states
                    .iter()
                    .map(|s| p::StateDecl {
                        name: s.name.clone(),
                        kind: match s.kind {
                            $crate::__private::StateKind::Value => p::StateKind::Value,
                            $crate::__private::StateKind::List => p::StateKind::List,
                            $crate::__private::StateKind::Map => p::StateKind::Map,
                        },
                        ttl_ms: s.ttl_ms,
                    })
                    .collect(),
                outputs: setup
                    .outputs
                    .iter()
                    .map(|o| p::OutputDecl {
                        name: o.name.clone(),
                        schema: schema_to_wit(&o.schema),
                        key: o.key.clone(),
                    })
                    .collect(),
            }
        }

        fn output_to_wit(
            emitted: $crate::__private::Emitted,
            errors: ::std::vec::Vec<$crate::__private::RecordError>,
        ) -> p::Output {
            p::Output {
                rows: t::Rows {
                    data: emitted.data,
                    ends: emitted.ends,
                },
                outputs: emitted.outputs,
                errors: errors.into_iter().map(error_to_wit).collect(),
            }
        }

        fn not_initialised(n: usize) -> p::Output {
            let failed = $crate::__private::BatchOutput::all_failed(n, "processor used before init");
            output_to_wit($crate::__private::Emitted::default(), failed.errors)
        }

        fn domains_from_wit(d: &[wafer::udf::timers::TimeDomain]) -> ::std::vec::Vec<$crate::TimeDomain> {
            d.iter()
                .map(|d| match d {
                    wafer::udf::timers::TimeDomain::EventTime => $crate::TimeDomain::EventTime,
                    wafer::udf::timers::TimeDomain::ProcessingTime => $crate::TimeDomain::ProcessingTime,
                })
                .collect()
        }
    };
}

/// Glue shared by every world's export: conversions between the generated
/// WIT types and the SDK's, and the host functions every world imports.
#[doc(hidden)]
#[macro_export]
macro_rules! __common_glue {
    () => {
        use wafer::udf::types as t;

        fn component_info() -> t::ComponentInfo {
            t::ComponentInfo {
                name: ::std::string::String::from(env!("CARGO_PKG_NAME")),
                version: ::std::string::String::from(env!("CARGO_PKG_VERSION")),
                sdk: ::std::string::String::from($crate::SDK),
            }
        }

        fn field_type_to_wit(ty: $crate::row::FieldType) -> t::FieldType {
            match ty {
                $crate::row::FieldType::Str => t::FieldType::Str,
                $crate::row::FieldType::Int => t::FieldType::Int,
                $crate::row::FieldType::Float => t::FieldType::Float,
                $crate::row::FieldType::Bool => t::FieldType::Boolean,
                $crate::row::FieldType::Bytes => t::FieldType::Bytes,
            }
        }

        fn schema_to_wit(s: &$crate::row::Schema) -> t::Schema {
            t::Schema {
                fields: s
                    .fields()
                    .iter()
                    .map(|f| t::Field {
                        name: f.name.clone(),
                        ty: field_type_to_wit(f.ty),
                        nullable: f.nullable,
                    })
                    .collect(),
                event_time: s.event_time().map(|i| s.field(i).name.clone()),
            }
        }

        fn schema_from_wit(
            s: t::Schema,
        ) -> ::core::result::Result<$crate::row::Schema, ::std::string::String> {
            let fields = s
                .fields
                .into_iter()
                .map(|f| $crate::row::Field {
                    name: f.name,
                    ty: match f.ty {
                        t::FieldType::Str => $crate::row::FieldType::Str,
                        t::FieldType::Int => $crate::row::FieldType::Int,
                        t::FieldType::Float => $crate::row::FieldType::Float,
                        t::FieldType::Boolean => $crate::row::FieldType::Bool,
                        t::FieldType::Bytes => $crate::row::FieldType::Bytes,
                    },
                    nullable: f.nullable,
                })
                .collect();
            $crate::row::Schema::new(fields, s.event_time.as_deref()).map_err(|e| e.to_string())
        }

        fn error_to_wit(e: $crate::__private::RecordError) -> t::RecordError {
            t::RecordError {
                index: e.index,
                kind: match e.kind {
                    $crate::ErrorKind::Decode => t::ErrorKind::Decode,
                    $crate::ErrorKind::Invalid => t::ErrorKind::Invalid,
                    $crate::ErrorKind::Failed => t::ErrorKind::Failed,
                },
                message: e.message,
            }
        }

        fn install_host() {
            use wafer::udf::log as wlog;
            use wafer::udf::metrics as wm;
            $crate::__private::install_host($crate::__private::HostFns {
                log: |level, msg| {
                    let level = match level {
                        $crate::log::Level::Trace => wlog::Level::Trace,
                        $crate::log::Level::Debug => wlog::Level::Debug,
                        $crate::log::Level::Info => wlog::Level::Info,
                        $crate::log::Level::Warn => wlog::Level::Warn,
                        $crate::log::Level::Error => wlog::Level::Error,
                    };
                    wlog::log(level, msg)
                },
                declare: |name, kind, help| {
                    let kind = match kind {
                        $crate::metrics::Kind::Counter => wm::MetricKind::Counter,
                        $crate::metrics::Kind::Gauge => wm::MetricKind::Gauge,
                        $crate::metrics::Kind::Histogram => wm::MetricKind::Histogram,
                    };
                    wm::declare(name, kind, help)
                },
                counter_add: wm::counter_add,
                gauge_set: wm::gauge_set,
                histogram_observe: wm::histogram_observe,
            });
        }
    };
}

#[doc(hidden)]
pub mod __private;
