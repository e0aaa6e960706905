// Links Debian's libqb (libqb-dev): the IPC server and client are libqb's own.
fn main() {
    println!("cargo:rustc-link-lib=qb");
}
