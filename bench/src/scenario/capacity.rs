//! `capacity`: as many logged-in users as the descriptor limit allows (one
//! process may hold at most 20 000 here, and the server needs one per
//! user), every one of them let in, and one broadcast that reaches all.

use std::io;

use clap::Args;

use super::{fanout, Options};
use crate::report::Outcome;
use crate::server::Target;

#[derive(Debug, Clone, Args)]
pub struct Sizes {
    /// Users to hold at once.
    #[arg(long, default_value_t = 19_000)]
    pub users: u32,
}

impl Sizes {
    pub fn params(&self) -> String {
        format!("users={}", self.users)
    }
}

pub async fn run(target: &Target, sizes: &Sizes, options: &Options) -> io::Result<Outcome> {
    // The fan-out already fails on any refusal or undelivered message.
    fanout::fan_out(target, sizes.users, options).await
}
