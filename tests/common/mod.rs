#![allow(dead_code)]
pub mod daemon;
pub mod dbus;
pub mod java;
pub mod kafka_broker;
pub mod keys;
pub mod real_kafka;
pub mod softhsm;
pub mod swtpm;
pub mod tls;
