//! The payment-service binary's library half: configuration, telemetry and
//! the wiring of adapters to use cases. `main.rs` only parses the command
//! line; tests start the very same [`Application`].

pub mod commands;
pub mod config;
pub mod startup;
pub mod telemetry;

pub use config::Config;
pub use startup::Application;
