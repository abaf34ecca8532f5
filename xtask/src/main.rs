//! `cargo xtask`: kg's developer workflow as Rust code.
fn main() -> anyhow::Result<()> {
    anyhow::bail!("no xtask commands yet")
}
