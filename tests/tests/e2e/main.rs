//! End-to-end specs: the real host over HTTP, on SQLite and on PostgreSQL.

mod auth;
mod caches;
mod console;
mod delegation;
mod durability;
mod edges;
mod extensions;
mod hibernation;
mod lifecycle;
mod logs;
mod openapi;
mod org;
mod plugins;
mod registry;
mod runtimes;
mod schedules;
mod secrets;
mod security_auth;
mod security_routes;
mod security_sandbox;
mod security_secrets;
mod security_templates;
mod security_urls;
mod streams;
mod templates;
mod workspaces;
