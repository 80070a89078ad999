//! Hand-driven tests of the client core.
