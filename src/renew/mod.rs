//! Renewal: the pure policy (when) and the engine (doing it).

pub mod engine;
pub mod mint;
pub mod policy;
