//! Keyward: a key-management control plane for keys that live in cloud HSMs.
//!
//! The daemon keeps a catalog of accounts, groups and keys, links groups to external key
//! managers through WebAssembly connector plugins, and asks WebAssembly policy plugins
//! whether each operation is allowed.
//!
//! Where things live:
//! - [`plugins`]: the sandboxed WebAssembly plugin runtime (registry, warm instance pools,
//!   limits, the host `http` and `log` imports) and typed calls into policy and connector
//!   plugins.
//! - [`daemon`]: wiring the pieces together and running until shut down.

pub mod api;
pub mod audit;

pub mod auth;
pub mod catalog;
pub mod crypto;

pub mod daemon;
pub mod demo;
pub mod kms;
pub mod plugins;
pub mod policy;

pub mod time;
pub mod workflows;
