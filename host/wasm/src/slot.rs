//! The hot-swappable handle through which stages reach a component.
//!
//! A slot holds the current [`LoadedComponent`] and a generation number.
//! Stages remember the generation of the instance they run; between two
//! batches they compare it with the slot's (one atomic load) and, when it
//! moved, instantiate the new component before the next batch. In-flight
//! batches finish on the old instance, so a swap never splits a batch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::engine::LoadedComponent;

/// A replaceable reference to a loaded component.
#[derive(Clone)]
pub struct ComponentSlot {
    inner: Arc<SlotInner>,
}

struct SlotInner {
    current: RwLock<Arc<LoadedComponent>>,
    generation: AtomicU64,
}

impl ComponentSlot {
    /// A slot holding `component` at generation 0.
    pub fn new(component: LoadedComponent) -> Self {
        ComponentSlot {
            inner: Arc::new(SlotInner {
                current: RwLock::new(Arc::new(component)),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// The generation of the current component.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// The current component and its generation.
    pub fn current(&self) -> (Arc<LoadedComponent>, u64) {
        // Read the generation under the lock so the pair is consistent.
        let guard = match self.inner.current.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        (guard.clone(), self.inner.generation.load(Ordering::Acquire))
    }

    /// Replaces the component; stages switch to it before their next batch.
    /// Returns the new generation.
    pub fn swap(&self, component: LoadedComponent) -> u64 {
        let mut guard = match self.inner.current.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Arc::new(component);
        self.inner.generation.fetch_add(1, Ordering::AcqRel) + 1
    }
}
