#![allow(dead_code)]
pub mod daemon;
pub mod dbus;
pub mod java;
pub mod keys;
pub mod softhsm;
pub mod swtpm;
