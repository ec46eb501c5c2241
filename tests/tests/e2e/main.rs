//! End-to-end specs: the real host over HTTP, on SQLite and on PostgreSQL.

mod auth;
mod console;
mod delegation;
mod edges;
mod extensions;
mod lifecycle;
mod logs;
mod openapi;
mod org;
mod plugins;
mod registry;
mod runtimes;
mod secrets;
mod security_sandbox;
mod streams;
mod workspaces;
