//! The outbound adapters: MariaDB (sqlx) and Kafka (rdkafka).
//!
//! Everything that knows a driver lives here and implements a port of
//! `payment-application`; nothing here decides a business rule.

pub mod kafka;
pub mod mariadb;
