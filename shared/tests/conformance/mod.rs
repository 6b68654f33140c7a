//! Port conformance suites, written once against the port traits so every adapter runs the same
//! code: the embedded SQLite / file adapters (`embedded_conformance.rs`) and, later, the AWS
//! adapters against moto. Each property is a `pub async fn`; `run_*_suite` runs them all.
//!
//! A test crate that includes this module may use only some of the properties.
#![allow(dead_code)]

pub mod queue;
pub mod store;
pub mod vault;

use std::any::Any;
use std::sync::Arc;

/// A port under test plus whatever keeps its backing storage alive (a temp dir, a table to drop).
pub struct Subject<P: ?Sized> {
    pub port: Arc<P>,
    _keep: Box<dyn Any + Send>,
}

impl<P: ?Sized> Subject<P> {
    pub fn new(port: Arc<P>, keep: impl Any + Send) -> Self {
        Self {
            port,
            _keep: Box::new(keep),
        }
    }
}
