//! Machines share only vocabulary: a machine file that names another machine (`crate::rotation`,
//! `crate::machines::rotation`, `super::rotation`) fails here, and so does a vocabulary module
//! that names any machine. What two machines share belongs in a vocabulary module.

use std::fs;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The machine names: one file each under `src/machines/`.
fn machines() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(src().join("machines"))
        .expect("src/machines is readable")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .filter(|n| n != "mod")
        .collect();
    names.sort();
    names
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every `<prefix><name>` in `text` that is a whole path segment, as `line: text` findings.
fn references(text: &str, prefixes: &[&str], name: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        for prefix in prefixes {
            let needle = format!("{prefix}{name}");
            let mut from = 0;
            while let Some(at) = line[from..].find(&needle) {
                let start = from + at;
                let end = start + needle.len();
                let before_ok = !line[..start].ends_with(is_ident);
                let after_ok = !line[end..].starts_with(is_ident);
                if before_ok && after_ok {
                    found.push(format!("line {}: {}", n + 1, line.trim()));
                }
                from = end;
            }
        }
    }
    found
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The violations of the rule in one file: `file imports other (line n: ...)`.
fn violations(path: &Path, own: Option<&str>, machines: &[String]) -> Vec<String> {
    let text = read(path);
    let prefixes: &[&str] = if own.is_some() {
        &["crate::", "machines::", "super::"]
    } else {
        &["crate::", "machines::"]
    };
    let mut out = Vec::new();
    for other in machines.iter().filter(|m| Some(m.as_str()) != own) {
        for r in references(&text, prefixes, other) {
            out.push(format!(
                "{} imports machine `{other}` ({r})",
                path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
                    .unwrap_or(path)
                    .display()
            ));
        }
    }
    out
}

#[test]
fn there_are_machines_to_check() {
    let names = machines();
    assert!(
        names.len() >= 10,
        "expected the machine files, found {names:?}"
    );
}

#[test]
fn no_machine_imports_another_machine() {
    let names = machines();
    let problems: Vec<String> = names
        .iter()
        .flat_map(|m| {
            let path = src().join("machines").join(format!("{m}.rs"));
            violations(&path, Some(m), &names)
        })
        .collect();
    assert!(
        problems.is_empty(),
        "machines must share only vocabulary; move what they share into a vocabulary module:\n{}",
        problems.join("\n")
    );
}

#[test]
fn no_vocabulary_module_imports_a_machine() {
    let names = machines();
    let mut problems = Vec::new();
    for entry in fs::read_dir(src()).expect("src is readable") {
        let path = entry.expect("directory entry").path();
        let vocabulary = path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|f| f != "lib.rs");
        if vocabulary {
            problems.extend(violations(&path, None, &names));
        }
    }
    assert!(
        problems.is_empty(),
        "vocabulary modules must not depend on machines:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_scan_sees_an_import() {
    let text = "use crate::rotation::RotationReason;\nuse crate::rotation_plan::X;\n";
    assert_eq!(
        references(text, &["crate::"], "rotation"),
        vec!["line 1: use crate::rotation::RotationReason;".to_string()]
    );
}
