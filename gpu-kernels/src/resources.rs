//! Device copies of plan tables (window, twiddles, filterbank, DCT, resize coefficients), built
//! on first use and reused for every later call with the same plan.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::Result;

type Shared = Arc<dyn Any + Send + Sync>;

/// Keyed by the address of the plan table they mirror; each entry holds that table's `Arc` so
/// the address cannot be reused while the entry lives.
#[derive(Default)]
pub(crate) struct Resources {
    entries: Mutex<HashMap<usize, (Shared, Shared)>>,
}

/// Enough for many image sizes in one run; past it the cache starts over rather than grow.
const MAX_ENTRIES: usize = 512;

impl Resources {
    /// The device copy of `owner`'s table, built by `build` on first use. A failed build
    /// caches nothing, so the next call tries again.
    pub(crate) fn get<O, V>(&self, owner: &Arc<O>, build: impl FnOnce() -> Result<V>) -> Result<Arc<V>>
    where
        O: Any + Send + Sync,
        V: Any + Send + Sync,
    {
        let key = Arc::as_ptr(owner) as *const () as usize;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, value)) = entries.get(&key) {
            if let Ok(value) = value.clone().downcast::<V>() {
                return Ok(value);
            }
        }
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        let value = Arc::new(build()?);
        entries.insert(key, (owner.clone() as Shared, value.clone() as Shared));
        Ok(value)
    }

    /// Forgets every table: after a device error, some of them may be invalid buffers.
    pub(crate) fn clear(&self) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}
