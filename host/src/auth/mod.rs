//! Who is calling and what they may do: password and API-key credentials, sessions (bearer
//! tokens), and the authorization rules of accounts, groups and applications.

pub mod access;
pub mod credentials;
pub mod sessions;

pub use access::Access;
pub use credentials::{ApiKey, hash_password, verify_password};
pub use sessions::{Principal, Session, Sessions};
