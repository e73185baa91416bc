//! Who is calling and what they may do: password and API-key credentials, sessions (bearer
//! tokens), the throttle on failed logins, and the authorization rules of accounts, groups
//! and applications.

pub mod access;
pub mod certs;
pub mod credentials;
pub mod sessions;
pub mod throttle;

pub use access::Access;
pub use credentials::{ApiKey, hash_password, verify_password, verify_password_or_dummy};
pub use sessions::{Principal, Session, Sessions};
pub use throttle::{LoginThrottle, ThrottleLimits};
