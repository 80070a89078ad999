//! `neoadmin`: see [`neo_daemons::admin`].

fn main() {
    neo_daemons::admin::main()
}
