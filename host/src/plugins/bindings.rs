//! Host-side bindings of the plugin contract, one module per WIT version.
//!
//! When the contract changes, a new version directory is added under `wit/` and a new module
//! here; the old ones stay so installed plugins keep working (as Spin and Zed do). Callers use
//! the newest types; calls into an older plugin convert them down.

pub mod v0_1_0 {
    pub mod policy {
        wasmtime::component::bindgen!({
            world: "policy",
            path: "../wit/v0.1.0",
            imports: { default: trappable },
            exports: { default: async },
        });
    }

    pub mod kms_connector {
        wasmtime::component::bindgen!({
            world: "kms-connector",
            path: "../wit/v0.1.0",
            imports: { "keyward:plugin/http.send": async, default: trappable },
            exports: { default: async },
            with: {
                "keyward:plugin/types": super::policy::keyward::plugin::types,
                "keyward:plugin/log": super::policy::keyward::plugin::log,
            },
        });
    }
}
