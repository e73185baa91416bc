//! Keyward: a key-management control plane for keys that live in cloud HSMs.
//!
//! The daemon keeps a catalog of accounts, groups and keys, links groups to external key
//! managers through WebAssembly connector plugins, and asks WebAssembly policy plugins
//! whether each operation is allowed.
//!
//! Where things live:
//! - [`api`]: the REST API (Fortanix DSM style), one module per resource; handlers parse,
//!   call the services and render.
//! - [`console`]: the web console, server-rendered pages over the API's handlers.
//! - [`keys`]: the key service, the one owner of every state change of a key, and the
//!   integrity rules it enforces (export, copies, KMIP lifecycle, key-encryption keys),
//!   rotation included.
//! - [`catalog`]: accounts, users, applications, groups, keys, escrow, workflow runs and the
//!   audit log in SQLite; secrets sealed under the master key.
//! - [`auth`], [`audit`], [`policy`], [`crypto`], [`cache`]: sessions, roles and the login
//!   throttle, the audit writer, policy enforcement, cryptography on catalog keys, and the
//!   caches of the hot path.
//! - [`quorum`]: the rules of quorum approval (policies, who reviews, when a quorum is met);
//!   the approval requests themselves are in `api::approvals`.
//! - [`plugins`]: the sandboxed WebAssembly plugin runtime (registry, warm instance pools,
//!   limits, the host `http` and `log` imports) and typed calls into policy and connector
//!   plugins.
//! - [`kms`]: a group's link to an external key manager, and typed calls to its connector.
//! - [`workflows`]: the Rhai workflow scripts behind every flow against an external key
//!   manager, their sandbox and host API, and their run records.
//! - [`scheduler`]: scheduled rotations, cron jobs, the resumption of interrupted rotations
//!   and expiry warnings; [`cadence`]: when recurring things fall due (intervals, cron in a
//!   time zone).
//! - [`webhooks`]: signed webhooks and Azure Event Grid deliveries that start workflows;
//!   [`notify`]: signed notifications of key events to configured endpoints, from an outbox.
//! - [`daemon`]: the composition root, wiring the pieces together and running until shut
//!   down; [`demo`]: the first-run demo with the emulated HSM.

/// Counts what a running workflow script allocates, for its memory budget
/// ([`workflows::memory`]); the system allocator otherwise.
#[global_allocator]
static ALLOCATOR: workflows::memory::CountingAllocator = workflows::memory::CountingAllocator;

pub mod api;
pub mod audit;
pub mod auth;
pub mod cache;
pub mod cadence;
pub mod catalog;
pub mod console;
pub mod crypto;
pub mod daemon;
pub mod demo;
pub mod keys;
pub mod kms;
pub mod metrics;
pub mod notify;
pub mod plugins;
pub mod policy;
pub mod quorum;
pub mod reports;
pub mod scheduler;
pub mod time;
pub mod webhooks;
pub mod workflows;
