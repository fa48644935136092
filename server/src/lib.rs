//! `sovra-server`: `sovra serve`, the node that cloud operators run.
//!
//! One process per node: an HTTP API (axum) over the sovra runtime, with
//! tenants and their API keys, a plugin marketplace (signed submissions,
//! checks, an out-of-process compile, operator review, a hash-chained
//! publisher log), installs with grants under the operator's ceilings,
//! invocations (JSON or streamed), controller episodes, history, metrics and
//! an OpenAPI document.
//!
//! Guide to the modules: [`config`] reads the node's file; [`state`] holds
//! what the node serves from; [`api`] maps HTTP onto it; [`submission`] and
//! [`compile`] take plugins in, [`signature`] says who published them; [`db`], [`ledger`] and [`artifacts`] keep
//! them; [`keys`], [`limiter`] and [`metrics`] guard and count the calls;
//! [`transport`] takes connections off the network and keeps any one client
//! from holding what the others need.

pub mod api;
pub mod artifacts;
pub mod compile;
pub mod config;
pub mod db;
pub mod episodes;
pub mod export;
pub mod keys;
pub mod ledger;
pub mod limiter;
pub mod metrics;
pub mod quotas;
pub mod refusals;
pub mod signature;
pub mod state;
pub mod submission;
pub mod transport;

pub use config::NodeConfig;
pub use state::{AppState, StartError};
pub use transport::serve;
