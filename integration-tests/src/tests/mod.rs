//! The integration tests, one binary.

mod drain;
mod failures;
mod grpc;
mod http;
mod outbound;
mod reload;
mod tls;
