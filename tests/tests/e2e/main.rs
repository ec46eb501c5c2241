//! End-to-end specs: the real host over HTTP, on SQLite and on PostgreSQL.

mod registry;
mod workspaces;
