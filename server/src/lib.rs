//! `chat-server`: a line-protocol chat server.
//!
//! The shape is the gopl chat server's, made robust:
//! - [`server`]: the accept loops, which drain connections on shutdown,
//!   and `gate`, the one place every door's connections are let in or
//!   refused (`--max-clients`, `--max-per-ip`, the connect rate, bans);
//! - [`web`]: the third door, HTTP(S) with the browser client's page and
//!   the chat as a WebSocket;
//! - [`limits`]: `--max-per-ip` and the connect rate, counted across
//!   every door;
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
pub(crate) mod gate;
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
pub mod web;

pub use config::Config;
