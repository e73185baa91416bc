//! Keyward: a key-management control plane for keys that live in cloud HSMs.
//!
//! The daemon keeps a catalog of accounts, groups and keys, links groups to external key
//! managers through WebAssembly connector plugins, and asks WebAssembly policy plugins
//! whether each operation is allowed.
//!
//! Where things live:
//! - [`api`]: the REST API (Fortanix DSM style), one module per resource.
//! - [`catalog`]: accounts, users, applications, groups, keys, escrow, workflow runs and the
//!   audit log in SQLite; secrets sealed under the master key.
//! - [`auth`], [`audit`], [`policy`], [`crypto`]: sessions and roles, the audit writer, policy
//!   enforcement, cryptography on catalog keys.
//! - [`plugins`]: the sandboxed WebAssembly plugin runtime (registry, warm instance pools,
//!   limits, the host `http` and `log` imports) and typed calls into policy and connector
//!   plugins.
//! - [`kms`]: a group's link to an external key manager, and typed calls to its connector.
//! - [`workflows`]: the Rhai workflow scripts behind every flow against an external key
//!   manager, their sandbox and host API, and their run records.
//! - [`daemon`]: wiring the pieces together and running until shut down; [`demo`]: the
//!   first-run demo with the emulated HSM.

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
