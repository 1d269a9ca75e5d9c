//! Unit tests of the matching core.
