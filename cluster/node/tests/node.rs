//! Integration tests of neo-node: the tidy rules every logic crate must follow, and the
//! partition table.

mod pt;
mod tidy;
