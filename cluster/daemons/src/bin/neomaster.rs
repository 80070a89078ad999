//! `neomaster`: see [`neo_daemons::master`].

fn main() {
    neo_daemons::master::main()
}
