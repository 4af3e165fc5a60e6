//! The subcommands, one module each: its arguments (`clap::Args`) and its
//! `run`. `main.rs` only parses the command line and starts the runtime.

pub mod cache;
pub mod gateway;
pub mod import;
pub mod queue;
pub mod recover_index;
pub mod reindex;
pub mod role;
pub mod serve;
