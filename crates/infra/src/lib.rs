//! The adapters: MariaDB (sqlx), Kafka (rdkafka) and the outbox relay
//! between them.
//!
//! Everything that knows a driver lives here and implements a port of
//! `payment-application`; nothing here decides a business rule.

pub mod kafka;
pub mod mariadb;
pub mod outbox;
