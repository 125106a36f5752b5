//! `sqlx::migrate!` embeds `migrations/` at compile time but cannot tell
//! cargo to watch it on stable Rust: a new migration must rebuild the crate.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
