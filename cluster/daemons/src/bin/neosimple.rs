//! `neosimple`: see [`neo_daemons::simple`].

fn main() {
    neo_daemons::simple::main()
}
