//! creditd: customers' credit balances, Stripe-compatible, over gRPC and a Stripe REST shim.
//!
//! Layout: `domain` holds the rules (pure), `service` is the one API both transports call
//! (transactions, serialization, tenancy, idempotency), `store` is the only place SeaORM
//! appears, and `grpc` / `rest` translate wire formats to service calls and back.

pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod idempotency_headers;
pub mod listen;
pub mod render;
pub mod rest;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod tls;

pub use error::{Error, ErrorKind, Result};
