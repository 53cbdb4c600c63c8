//! The `chat-client` binary: flags in, exit code out; the library does the rest.

use std::process::ExitCode;

use chat_client::Options;
use clap::Parser as _;

fn main() -> ExitCode {
    chat_client::run(Options::parse()).into()
}
