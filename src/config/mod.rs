//! Configuration: typed per-file parse, drop-in merge, validation into [`Settings`].

pub mod settings;

pub use settings::*;
