//! The checked-in `include/shmq.h` must equal what cbindgen generates from the sources now.

use std::path::Path;

#[test]
fn header_is_current() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("config");
    let bindings = cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen failed to generate the header");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let header = crate_dir.join("include/shmq.h");
    if std::env::var_os("SHMQ_BLESS").is_some() {
        std::fs::write(&header, &generated).expect("write header");
        return;
    }
    let current = std::fs::read(&header).unwrap_or_default();
    if current != generated {
        let new = std::env::temp_dir().join("shmq.h.generated");
        std::fs::write(&new, &generated).expect("write generated header");
        panic!(
            "ffi/include/shmq.h is out of date.\n  see the difference: diff -u {} {}\n  \
             fix it:             SHMQ_BLESS=1 cargo test -p shmq-ffi --test header\n  \
             (or: cp {} {})",
            header.display(),
            new.display(),
            new.display(),
            header.display()
        );
    }
}
