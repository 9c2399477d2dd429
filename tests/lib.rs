//! All integration tests in one binary (one link, shared fixtures).

mod common;
mod integration;
