//! `neostorage`: see [`neo_daemons::storage`].

fn main() {
    neo_daemons::storage::main()
}
