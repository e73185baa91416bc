//! The web console in a real browser (headless Chromium through chromedriver), one test per
//! group of flows of FLOWS.md, each asserting what the API then reports, not only what the
//! pages show. Screenshots of every screen go to `target/tmp/console-screenshots/`.
//!
//! - `hsm`: linking, sync, copy to Azure, rotation with linked copies, soft delete, recover,
//!   workflows, schedules, webhooks; CSP, cookie and CSRF on the wire.
//! - `dashboard`: the start page and the reports over a catalog whose figures are known.
//! - `keys`: making keys with every field, imports (PEM, KEK), paging and search, copies
//!   with permissions, rotation policies, restore and purge.
//! - `people`: accounts, users, applications, the plugins page.
//! - `groups`: policies as forms, attached plugins, TLS files and client certificates.
//! - `vaults`: a group linked to a Key Vault vault with its tier, and a key's BYOK file.
//! - `approvals`: a group's quorum approval policy, the reviewer's badge and queue, the
//!   requester's result.

mod approvals;
mod browser;
mod dashboard;
mod groups;
mod hsm;
mod keys;
mod people;
mod vaults;
