//! The manager's storage: the interface every service uses (`conduit-store`) and the engines
//! the binary can open (`open_store` in the crate root picks one).

pub use conduit_store::*;
pub use conduit_store_sqlite as sqlite;
