//! The instance lifecycle shared by every stage that calls a guest: start an
//! instance from the slot's current component, arm the deadline and memory
//! accounting before each call, classify a failed call, throw the broken
//! instance away, and follow hot swaps between batches.

use std::sync::Arc;

use wasmtime::Store;

use crate::engine::{LoadedComponent, Pre, first_line};
use crate::host::{GuestTelemetry, HostState};
use crate::{CallError, ComponentSlot, Limits, LoadError, WasmRuntime};

/// What differs between worlds: how to instantiate, initialise and call.
pub(crate) trait Role: Sized {
    /// The generated bindings of an instance.
    type Bindings;
    /// What `init` yields (a schema for deserializers).
    type Setup: Clone + PartialEq;
    /// What `init` needs besides the config (the input schema of a filter).
    type Input: Clone;

    fn instantiate(pre: &Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self::Bindings>;
    fn init(
        b: &Self::Bindings,
        store: &mut Store<HostState>,
        config: &str,
        input: &Self::Input,
    ) -> wasmtime::Result<Result<Self::Setup, String>>;
}

struct Instance<R: Role> {
    store: Store<HostState>,
    bindings: R::Bindings,
}

/// A guest instance that is replaced whenever a call fails or the slot's
/// component changes.
pub(crate) struct Isolated<R: Role> {
    rt: WasmRuntime,
    slot: ComponentSlot,
    limits: Limits,
    telemetry: Arc<dyn GuestTelemetry>,
    config: String,
    input: R::Input,
    component: Arc<LoadedComponent>,
    generation: u64,
    setup: R::Setup,
    instance: Option<Instance<R>>,
}

impl<R: Role> Isolated<R> {
    pub(crate) fn new(
        rt: &WasmRuntime,
        slot: ComponentSlot,
        config: String,
        input: R::Input,
        limits: Limits,
        telemetry: Arc<dyn GuestTelemetry>,
    ) -> Result<Self, LoadError> {
        let (component, generation) = slot.current();
        let (instance, setup) = start::<R>(rt, &component, &config, &input, &limits, &telemetry)?;
        Ok(Isolated {
            rt: rt.clone(),
            slot,
            limits,
            telemetry,
            config,
            input,
            component,
            generation,
            setup,
            instance: Some(instance),
        })
    }

    pub(crate) fn setup(&self) -> &R::Setup {
        &self.setup
    }

    pub(crate) fn component(&self) -> &Arc<LoadedComponent> {
        &self.component
    }

    /// Switches to the slot's current component if it changed. A new version
    /// whose `init` fails or declares a different setup (schema) is refused
    /// and the old one kept, because the stages after this one were planned
    /// against the old setup.
    pub(crate) fn follow_swap(&mut self) {
        if self.slot.generation() == self.generation {
            return;
        }
        let (component, generation) = self.slot.current();
        self.generation = generation;
        match start::<R>(
            &self.rt,
            &component,
            &self.config,
            &self.input,
            &self.limits,
            &self.telemetry,
        ) {
            Ok((instance, setup)) if setup == self.setup => {
                tracing::info!(
                    component = component.name(),
                    version = component.info().version,
                    "switched to a new component version"
                );
                self.instance = Some(instance);
                self.component = component;
            }
            Ok(_) => tracing::error!(
                component = component.name(),
                "refused the new component version: it declares a different schema"
            ),
            Err(e) => tracing::error!(
                component = component.name(),
                "refused the new component version: {e}"
            ),
        }
    }

    /// Calls the guest through `f`; on failure the instance is dropped and
    /// the next call starts a fresh one.
    pub(crate) fn call<T>(
        &mut self,
        f: impl FnOnce(&R::Bindings, &mut Store<HostState>) -> wasmtime::Result<T>,
    ) -> Result<T, CallError> {
        if self.instance.is_none() {
            match start::<R>(
                &self.rt,
                &self.component,
                &self.config,
                &self.input,
                &self.limits,
                &self.telemetry,
            ) {
                Ok((i, _)) => self.instance = Some(i),
                Err(e) => return Err(CallError::Trap(format!("cannot restart the component: {e}"))),
            }
        }
        let Some(inst) = self.instance.as_mut() else {
            return Err(CallError::Trap("no instance".into()));
        };
        arm(&self.rt, &mut inst.store, &self.limits);
        match f(&inst.bindings, &mut inst.store) {
            Ok(raw) => Ok(raw),
            Err(e) => {
                let err = classify(&mut inst.store, &e, &self.limits);
                self.instance = None;
                Err(err)
            }
        }
    }
}

/// Function `name` of the exported interface `iface` of an instance, for
/// typed calls whose parameters borrow the caller's buffers (the generated
/// bindings take owned records, which would mean copying a batch once more
/// before it is copied into the guest).
pub(crate) fn export_func(
    instance: &wasmtime::component::Instance,
    store: &mut Store<HostState>,
    iface: &str,
    name: &str,
) -> wasmtime::Result<wasmtime::component::Func> {
    let i = instance
        .get_export_index(&mut *store, None, iface)
        .ok_or_else(|| wasmtime::format_err!("no `{iface}` export"))?;
    instance
        .get_export_index(&mut *store, Some(&i), name)
        .and_then(|f| instance.get_func(&mut *store, f))
        .ok_or_else(|| wasmtime::format_err!("no `{name}` function in `{iface}`"))
}

/// `types.payloads` and `types.rows`, borrowed: lowered straight from the
/// caller's buffers.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lower)]
#[component(record)]
pub(crate) struct FlatRef<'a> {
    #[component(name = "data")]
    pub data: &'a [u8],
    #[component(name = "ends")]
    pub ends: &'a [u32],
}

/// Resets per-call accounting and sets the deadline.
fn arm(rt: &WasmRuntime, store: &mut Store<HostState>, limits: &Limits) {
    store.data_mut().limiter.hit = false;
    store.set_epoch_deadline(rt.ticks(limits.call_timeout));
}

/// Says why a call failed: deadline, memory limit, or another trap (with the
/// guest's last words on stderr, e.g. a panic message).
fn classify(store: &mut Store<HostState>, e: &wasmtime::Error, limits: &Limits) -> CallError {
    if let Some(wasmtime::Trap::Interrupt) = e.downcast_ref::<wasmtime::Trap>() {
        return CallError::Timeout(limits.call_timeout);
    }
    if store.data().limiter.hit {
        return CallError::Memory(limits.max_memory);
    }
    let stderr = store.data().stderr.take();
    let trap = first_line(&format!("{e:#}"));
    if stderr.is_empty() {
        CallError::Trap(trap)
    } else {
        CallError::Trap(format!("{trap}; guest stderr: {}", stderr.replace('\n', " | ")))
    }
}

fn start<R: Role>(
    rt: &WasmRuntime,
    c: &LoadedComponent,
    config: &str,
    input: &R::Input,
    limits: &Limits,
    telemetry: &Arc<dyn GuestTelemetry>,
) -> Result<(Instance<R>, R::Setup), LoadError> {
    let mut store = rt.store(&c.name, limits, telemetry);
    let fail = |e: &wasmtime::Error, store: &mut Store<HostState>| c.start_error(classify(store, e, limits));
    let bindings = match R::instantiate(&c.pre, &mut store) {
        Ok(b) => b,
        Err(e) => return Err(fail(&e, &mut store)),
    };
    arm(rt, &mut store, limits);
    let setup = match R::init(&bindings, &mut store, config, input) {
        Ok(Ok(s)) => s,
        Ok(Err(msg)) => return Err(c.start_error(format!("its init rejected the configuration: {msg}"))),
        Err(e) => return Err(fail(&e, &mut store)),
    };
    Ok((Instance { store, bindings }, setup))
}
