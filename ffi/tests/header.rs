//! The checked-in `include/shmq.h` must equal what cbindgen generates from the sources now.

use std::path::Path;

#[path = "../../tests/common/tools.rs"]
mod tools;

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

/// The header compiles without a warning as pedantic C99 and as C++, and its version
/// functions answer. Needs a C and a C++ compiler (`cc`, `c++`: apt-get install gcc g++).
#[test]
fn header_compiles_warning_free_as_c99_and_cpp() {
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let dir = tempfile::tempdir().unwrap();
    let source = "#include \"shmq.h\"\nint main(void) { return shmq_format_version() == 0 \
                  || shmq_version() == 0; }\n";
    for (compiler, file, flags) in [
        (
            "cc",
            "h.c",
            &["-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror"][..],
        ),
        (
            "c++",
            "h.cpp",
            &["-std=c++11", "-pedantic", "-Wall", "-Wextra", "-Werror"][..],
        ),
    ] {
        let found = tools::runs(compiler, &["--version"]);
        if !tools::require(
            compiler,
            found,
            "compiling shmq.h",
            "apt-get install gcc g++",
        ) {
            continue;
        }
        let path = dir.path().join(file);
        std::fs::write(&path, source).unwrap();
        let out = std::process::Command::new(compiler)
            .args(flags)
            .arg("-fsyntax-only")
            .arg("-I")
            .arg(&include)
            .arg(&path)
            .output()
            .unwrap_or_else(|e| {
                panic!("run {compiler} ({e}): install it (apt-get install gcc g++)")
            });
        assert!(
            out.status.success(),
            "{compiler} {flags:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // SAFETY: shmq_version returns a static NUL-terminated string.
    let version = unsafe { std::ffi::CStr::from_ptr(shmq::shmq_version()) };
    assert_eq!(version.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    assert_eq!(shmq::shmq_format_version(), shmq_core::FORMAT_VERSION);
}
