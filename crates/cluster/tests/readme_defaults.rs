//! The README's configuration tables say what the code does: every default
//! a row states is the default `ClusterConfig` has (an empty cluster file).

use cluster::ClusterConfig;

/// `a.b` in `v`, or `None` when a level is missing (an unset option).
fn lookup<'a>(v: &'a toml::Value, key: &str) -> Option<&'a toml::Value> {
    key.split('.').try_fold(v, |v, k| v.get(k))
}

/// A README default, as written, against the value: `Some(true)` when they
/// agree, `None` when the cell is prose the test does not read.
fn agrees(cell: &str, value: Option<&toml::Value>) -> Option<bool> {
    // "0 (off)" -> "0"; backticks are markup.
    let cell = cell
        .split(" (")
        .next()
        .unwrap_or(cell)
        .trim()
        .replace('`', "");
    match (cell.as_str(), value) {
        ("unset" | "none", v) => Some(v.is_none()),
        (_, None) => None,
        ("true" | "false", Some(v)) => Some(v.as_bool() == Some(cell == "true")),
        (_, Some(toml::Value::Array(a))) => {
            let shown = toml::Value::Array(a.clone()).to_string();
            Some(shown.replace(' ', "") == cell.replace(' ', ""))
        }
        (_, Some(v)) => {
            if let Ok(n) = cell.parse::<f64>() {
                let have = v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
                return Some(have == Some(n));
            }
            match v.as_str() {
                Some(s) if cell.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') => {
                    Some(s == cell)
                }
                _ => None,
            }
        }
    }
}

/// `cell` split at ", " except inside `[...]` (array defaults).
fn split_outside_brackets(cell: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0, 0);
    let b = cell.as_bytes();
    for i in 0..b.len() {
        match b[i] {
            b'[' => depth += 1,
            b']' => depth -= 1,
            b',' if depth == 0 && b.get(i + 1) == Some(&b' ') => {
                out.push(&cell[start..i]);
                start = i + 2;
            }
            _ => {}
        }
    }
    out.push(&cell[start..]);
    out
}

#[test]
fn the_readme_tables_state_the_defaults_the_code_has() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let defaults: ClusterConfig = toml::from_str("").expect("an empty cluster file");
    let value = toml::Value::try_from(&defaults).expect("as TOML");
    let (mut checked, mut wrong) = (0, Vec::new());
    for line in readme.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (keys, default) = (cells[1], cells.get(3).copied().unwrap_or(""));
        if keys.starts_with("`[[") {
            continue; // array tables: no defaults to compare
        }
        // "`a.b`, `c`" names a.b and a.c; the defaults are listed alike.
        let keys: Vec<String> = keys.split(", ").map(|k| k.replace('`', "")).collect();
        let prefix = keys[0].rsplit_once('.').map_or("", |(p, _)| p).to_owned();
        let full = |k: &str| {
            if k.contains('.') || prefix.is_empty() {
                k.to_owned()
            } else {
                format!("{prefix}.{k}")
            }
        };
        let cells: Vec<&str> = if keys.len() > 1 {
            split_outside_brackets(default)
        } else {
            vec![default]
        };
        for (k, cell) in keys.iter().zip(cells) {
            let k = full(k);
            match agrees(cell, lookup(&value, &k)) {
                Some(true) => checked += 1,
                Some(false) => wrong.push(format!(
                    "{k}: README says {cell}, the code has {:?}",
                    lookup(&value, &k)
                )),
                None => {}
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Most rows are read; prose cells ("1 with one store, 2 with more")
    // are the exception.
    assert!(checked >= 70, "only {checked} defaults checked");
}
