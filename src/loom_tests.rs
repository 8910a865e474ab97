//! Model checks of the ring protocol under loom (`RUSTFLAGS="--cfg loom" cargo test --lib --release loom`).
