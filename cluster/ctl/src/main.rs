//! neoctl: the command line to control a NEO cluster through its admin node.
fn main() {}
