//! The embedded default: everything on one machine, no cloud account. One SQLite database (WAL)
//! holds the store, the queue, the timers and the development identity provider's clients; an
//! AES-256-GCM file vault holds secrets; a TOML people file is the directory; approvals are
//! decided through the CLI / local API.

pub mod console;
pub mod queue;
pub mod sqlite;
pub mod vault;

pub use sqlite::{Db, Durability};
