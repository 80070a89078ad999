//! neoctl tests.
