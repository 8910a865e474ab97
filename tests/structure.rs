//! Checks that the documentation of the source tree matches the tree.
//!
//! * The module dependency list in `ARCHITECTURE.md` ("Module dependencies") is the one this
//!   test computes from `src/`: every `crate::` path outside comments and unit-test modules,
//!   resolved to the module file it names. There is no cycle among `src/` modules, and no
//!   module imports one of a layer above its own.
//! * The module table of `ARCHITECTURE.md` has one row per file of `src/`.
//! * Every `SYNC X` label used in the code is a row of the one sync-point table in
//!   `ARCHITECTURE.md` ("Sync points"), and every row is used.
//!
//! `cargo test --test structure -- --nocapture` prints the dependency list.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The layers of `src/`, bottom to top; a module may import its own layer and those below.
/// The root files are the crate-wide base: the error type and the two test hooks.
const LAYERS: &[&[&str]] = &[
    &["crash", "fault", "error"],
    &["protocol"],
    &["runtime"],
    &["mapping"],
    &["queue"],
    &["topic"],
    &["async_api"],
];

/// Every `.rs` file under `dir`, recursively, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The module path of a file under `src/` (`protocol::ring`; `queue` for `queue/mod.rs`;
/// the empty string for `lib.rs`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("file under src/");
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file without comments and without its unit-test module (`mod tests`, which
/// by convention ends the file).
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && lines.peek().is_some_and(|next| next.contains("mod tests"))
        {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        let code = match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Every path named after `crate::` in `code`, with one level of `{a, b::c}` expanded.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut at = 0;
    while let Some(found) = code[at..].find("crate::") {
        let start = at + found;
        at = start + "crate::".len();
        if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            continue; // `shmq_crate::` or similar
        }
        let mut prefix: Vec<String> = Vec::new();
        let mut i = at;
        loop {
            let ident_end = code[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(code.len(), |n| i + n);
            if ident_end > i {
                prefix.push(code[i..ident_end].to_string());
            }
            i = ident_end;
            if code[i..].starts_with("::{") {
                let close = code[i..].find('}').map_or(code.len(), |n| i + n);
                for item in code[i + 3..close].split(',') {
                    let mut path = prefix.clone();
                    path.extend(
                        item.split("::")
                            .map(|s| s.split_whitespace().next().unwrap_or("").to_string())
                            .filter(|s| !s.is_empty() && s != "self"),
                    );
                    out.push(path);
                }
                break;
            }
            if code[i..].starts_with("::") {
                i += 2;
                continue;
            }
            out.push(prefix);
            break;
        }
    }
    out
}

/// The submodules of `module` that `code` names by a relative path (`members::Members`,
/// `use consumer::TopicConsumer`), as a folder's `mod.rs` does.
fn child_paths(code: &str, module: &str, modules: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut at = 0;
    while let Some(found) = code[at..].find("::") {
        let end = at + found;
        at = end + 2;
        let start = code[..end]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        if start == end || (start >= 2 && &bytes[start - 2..start] == b"::") {
            continue; // not the first segment of a path
        }
        let child = if module.is_empty() {
            code[start..end].to_string()
        } else {
            format!("{module}::{}", &code[start..end])
        };
        if modules.contains(&child) {
            out.push(child);
        }
    }
    out
}

/// The crate root's re-exports: item name to the module path it comes from.
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let code = code_of(lib);
    for stmt in code.split(';') {
        let Some(pos) = stmt.find("pub use ") else {
            continue;
        };
        let stmt = &stmt[pos + "pub use ".len()..];
        let (module, items) = match stmt.find("::{") {
            Some(i) => (&stmt[..i], stmt[i + 3..].trim_end_matches(['}', ' ', '\n'])),
            None => {
                let i = stmt.rfind("::").expect("a path");
                (&stmt[..i], &stmt[i + 2..])
            }
        };
        for item in items.split(',') {
            let name = item.split(" as ").last().unwrap_or("").trim();
            if !name.is_empty() {
                map.insert(name.to_string(), module.trim().to_string());
            }
        }
    }
    map
}

/// The modules each module file depends on.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(ROOT).join("src");
    let files = rust_files(&src);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let lib = fs::read_to_string(src.join("lib.rs")).expect("read src/lib.rs");
    let exports = reexports(&lib);
    let resolve = |path: &[String]| -> Option<String> {
        // The longest prefix of `path` that is a module file, or a root re-export.
        let mut best = None;
        for n in 1..=path.len() {
            let candidate = path[..n].join("::");
            if modules.contains(&candidate) {
                best = Some(candidate);
            }
        }
        best.or_else(|| exports.get(path.first()?).cloned())
    };
    let mut deps = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        if module.is_empty() {
            continue; // lib.rs declares and re-exports; it imports nothing
        }
        let text = fs::read_to_string(file).expect("read a source file");
        let code = code_of(&text);
        let set: BTreeSet<String> = crate_paths(&code)
            .iter()
            .filter_map(|p| resolve(p))
            .chain(child_paths(&code, &module, &modules))
            .filter(|m| m != &module)
            .collect();
        deps.insert(module, set);
    }
    deps
}

/// The list as `ARCHITECTURE.md` shows it: one line per module, `module -> dependencies`.
fn render(deps: &BTreeMap<String, BTreeSet<String>>) -> String {
    let mut out = String::new();
    for (module, set) in deps {
        let list: Vec<&str> = set.iter().map(String::as_str).collect();
        let list = if list.is_empty() {
            "(nothing)".to_string()
        } else {
            list.join(", ")
        };
        out.push_str(&format!("{module} -> {list}\n"));
    }
    out
}

/// The layer index of a module (by its first path segment).
fn layer(module: &str) -> usize {
    let top = module.split("::").next().unwrap_or("");
    LAYERS
        .iter()
        .position(|l| l.contains(&top))
        .unwrap_or_else(|| panic!("module {module} is in no layer of LAYERS: add it"))
}

/// The cycles of the graph: its strongly connected components of more than one module.
fn cycles(deps: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Two modules share a cycle when each reaches the other.
    let reach = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(m) = stack.pop() {
            for next in deps.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> =
        deps.keys().map(|m| (m, reach(m))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for m in deps.keys() {
        if done.contains(m) || !reachable[m].contains(m) {
            continue;
        }
        let component: Vec<String> = reachable[m]
            .iter()
            .filter(|o| reachable.get(o).is_some_and(|r| r.contains(m)))
            .cloned()
            .collect();
        done.extend(component.iter().cloned());
        out.push(component);
    }
    out
}

/// The text of `ARCHITECTURE.md` between `<!-- NAME:begin -->` and `<!-- NAME:end -->`.
fn section(doc: &str, name: &str) -> String {
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let start = doc
        .find(&begin)
        .unwrap_or_else(|| panic!("ARCHITECTURE.md has no {begin} marker"))
        + begin.len();
    let stop = doc[start..]
        .find(&end)
        .unwrap_or_else(|| panic!("ARCHITECTURE.md has no {end} marker"))
        + start;
    doc[start..stop].to_string()
}

fn architecture() -> String {
    fs::read_to_string(Path::new(ROOT).join("ARCHITECTURE.md")).expect("read ARCHITECTURE.md")
}

#[test]
fn module_list_in_architecture_md_is_current() {
    let listing = render(&dependencies());
    println!("{listing}");
    let shown = section(&architecture(), "modules");
    let shown: String = shown
        .lines()
        .filter(|l| !l.starts_with("```") && !l.trim().is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        shown, listing,
        "ARCHITECTURE.md's module dependency list is stale; replace it with the list above"
    );
}

#[test]
fn no_module_cycle() {
    let found = cycles(&dependencies());
    assert!(
        found.is_empty(),
        "module cycles in src/ (each a set of modules that import one another): {found:?}"
    );
}

#[test]
fn no_module_imports_a_higher_layer() {
    let deps = dependencies();
    let upward: Vec<String> = deps
        .iter()
        .flat_map(|(m, set)| {
            set.iter()
                .filter(|d| layer(d) > layer(m))
                .map(move |d| format!("{m} -> {d}"))
        })
        .collect();
    assert!(upward.is_empty(), "imports of a higher layer: {upward:?}");
}

/// Every `SYNC X` label in the Rust sources of the workspace.
fn sync_labels() -> BTreeSet<String> {
    let mut labels = BTreeSet::new();
    for dir in ["src", "cli", "ffi", "python/src", "bridge", "pingpong"] {
        let dir = Path::new(ROOT).join(dir);
        assert!(dir.is_dir(), "{} is missing", dir.display());
        for file in rust_files(&dir) {
            if file.components().any(|c| c.as_os_str() == "target") {
                continue;
            }
            let text = fs::read_to_string(&file).expect("read a source file");
            let mut rest = text.as_str();
            while let Some(i) = rest.find("SYNC ") {
                rest = &rest[i + "SYNC ".len()..];
                let label: String = rest.chars().take_while(char::is_ascii_uppercase).collect();
                if label.len() == 1 {
                    labels.insert(label);
                }
            }
        }
    }
    labels
}

#[test]
fn every_sync_label_is_in_the_table() {
    let used = sync_labels();
    let table: BTreeSet<String> = section(&architecture(), "sync")
        .lines()
        .filter_map(|l| {
            let cell = l.strip_prefix('|')?.split('|').next()?.trim();
            (cell.len() == 1 && cell.chars().all(|c| c.is_ascii_uppercase()))
                .then(|| cell.to_string())
        })
        .collect();
    assert!(!used.is_empty(), "no SYNC label found in the code");
    let missing: Vec<&String> = used.difference(&table).collect();
    let unused: Vec<&String> = table.difference(&used).collect();
    assert!(
        missing.is_empty(),
        "SYNC labels used in the code but not in ARCHITECTURE.md's sync-point table: {missing:?}"
    );
    assert!(
        unused.is_empty(),
        "rows of ARCHITECTURE.md's sync-point table no code refers to: {unused:?}"
    );
}

#[test]
fn module_table_lists_every_source_file() {
    let src = Path::new(ROOT).join("src");
    let files: BTreeSet<String> = rust_files(&src)
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(ROOT).expect("file under the crate");
            rel.to_string_lossy().into_owned()
        })
        .collect();
    let rows: BTreeSet<String> = architecture()
        .lines()
        .filter_map(|l| l.strip_prefix("| `src/"))
        .filter_map(|l| l.split('`').next())
        .map(|f| format!("src/{f}"))
        .collect();
    let missing: Vec<&String> = files.difference(&rows).collect();
    let stale: Vec<&String> = rows.difference(&files).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "ARCHITECTURE.md's module table: files without a row {missing:?}, rows without a file \
         {stale:?}"
    );
}
