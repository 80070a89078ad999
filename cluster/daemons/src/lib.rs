//! NEO's daemons: the option and configuration-file machinery shared by `neomaster`,
//! `neostorage` and `neoadmin` (tools.md 1.1-1.4, 1.9), logging to stderr and to NEO's
//! SQLite log format, and the driver that runs a node's sans-IO logic on `neo-net`.
pub mod admin;
pub mod ctl;
pub mod daemon;
pub mod driver;
pub mod ini;
pub mod logging;
pub mod master;
pub mod options;
pub mod simple;
pub mod storage;
