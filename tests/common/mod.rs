#![allow(dead_code)]
pub mod java;
