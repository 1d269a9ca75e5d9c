//! No library: this crate holds the ACD's end-to-end tests (`tests/acd.rs`), which run the
//! sessions and routing services together, so that neither service crate depends on the
//! other.
