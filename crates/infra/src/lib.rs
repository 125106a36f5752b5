//! The adapters: MariaDB (sqlx), Kafka (rdkafka), the outbox relay between
//! them, and the payment gateways (Toss via reqwest, and a fake).
//!
//! Everything that knows a driver lives here and implements a port of
//! `payment-application`; nothing here decides a business rule.

pub mod fake_gateway;
pub mod gateway;
pub mod kafka;
pub mod mariadb;
pub mod outbox;
pub mod outbox_replay;
pub mod toss;
