//! Builds the parasite and restorer blobs (being written).
fn main() {
    println!("cargo::rerun-if-changed=build.rs");
}
