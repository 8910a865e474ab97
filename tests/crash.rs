mod common;
fn main() {
    common::run(&[]);
}
