//! `chat-server`: a line-protocol chat server.
//!
//! The shape is the gopl chat server's, made robust:
//! - [`server`]: the accept loops, which enforce `--max-clients` and drain
//!   connections on shutdown;
//! - [`limits`]: `--max-per-ip`, counted across both listeners;
//! - [`hub`]: the broadcaster, the one task that owns the set of users,
//!   in one process or, with [`hub::cluster`], across several over Redis
//!   (`--cluster`);
//! - [`session`]: one task per connection that reads the client's frames and
//!   writes what is queued for it;
//! - [`shutdown`]: signals turned into a cancellation token;
//! - [`essential`]: the tasks the server cannot live without, watched so
//!   that losing one stops the server instead of leaving it half-alive;
//! - [`logging`]: logs on stderr that never fail, even when stderr is gone;
//! - [`tls`]: the TLS listener's certificate, reloaded on SIGHUP;
//! - [`metrics`]: every metric and the functions that record them, and
//!   [`status`]: the HTTP endpoint (`--metrics`) that serves them with
//!   `/healthz` and `/readyz`.
//!
//! The wire format lives in the `chat-protocol` crate.

pub mod config;
pub mod essential;
pub mod hub;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod passwords;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod status;
pub mod store;
pub mod tls;

pub use config::Config;
