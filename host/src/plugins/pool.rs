//! Warm instances. Instantiating a component costs tens of microseconds; calling a warm one
//! a few. Each plugin keeps a small pool of instances per configuration, retires an
//! instance after any trap or timeout (it cannot be entered again) and after a bounded
//! number of calls, and bounds concurrency with a semaphore.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::{Semaphore, SemaphorePermit};
use wasmtime::Store;

use super::host::HostState;
use super::manifest::Limits;

/// An instantiated (and, for policies, configured) plugin with its store.
pub struct Warm<I> {
    pub store: Store<HostState>,
    pub instance: I,
    pub calls: u32,
}

pub struct InstancePool<I> {
    /// Idle instances by configuration (policies) or a single empty key (connectors).
    idle: Mutex<Idle<I>>,
    max_idle: usize,
    max_reuse: u32,
    slots: Semaphore,
}

struct Idle<I> {
    by_config: HashMap<String, Vec<Warm<I>>>,
    count: usize,
}

impl<I> InstancePool<I> {
    pub fn new(limits: &Limits) -> Self {
        InstancePool {
            idle: Mutex::new(Idle {
                by_config: HashMap::new(),
                count: 0,
            }),
            max_idle: limits.max_idle_instances,
            max_reuse: limits.max_instance_reuse,
            slots: Semaphore::new(limits.max_concurrency),
        }
    }

    /// Waits for a free call slot.
    pub async fn slot(&self) -> SemaphorePermit<'_> {
        self.slots
            .acquire()
            .await
            .expect("the pool semaphore is never closed")
    }

    pub fn take(&self, config: &str) -> Option<Warm<I>> {
        let mut idle = self.idle.lock().unwrap();
        // Emptied entries stay: removing and re-adding them would allocate on every call.
        let warm = idle.by_config.get_mut(config)?.pop()?;
        idle.count -= 1;
        Some(warm)
    }

    /// Returns a healthy instance after a call. It is dropped instead when it has served its
    /// quota of calls or the pool is full.
    pub fn put_back(&self, config: &str, mut warm: Warm<I>) {
        warm.calls += 1;
        if warm.calls >= self.max_reuse {
            return;
        }
        let mut idle = self.idle.lock().unwrap();
        if idle.count >= self.max_idle {
            // Make room by dropping an instance of another configuration, so a busy
            // configuration is not starved by idle ones.
            let victim = idle
                .by_config
                .iter()
                .find(|(k, v)| k.as_str() != config && !v.is_empty());
            let Some(victim) = victim.map(|(k, _)| k.clone()) else {
                return;
            };
            let instances = idle.by_config.get_mut(&victim).expect("key just found");
            instances.pop();
            if instances.is_empty() {
                idle.by_config.remove(&victim);
            }
            idle.count -= 1;
        }
        match idle.by_config.get_mut(config) {
            Some(instances) => instances.push(warm),
            None => {
                idle.by_config.insert(config.to_string(), vec![warm]);
            }
        }
        idle.count += 1;
    }

    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap().count
    }
}
