//! Subcommands of the `molecule` binary other than `serve`, kept in the library so tests can
//! drive them.

pub mod ext;
