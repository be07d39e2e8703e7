//! The documentation against the code: README.md is the front door and `docs/` holds the
//! reference, so both are checked here the way `readme.rs` checks the run block.
//!
//! - every relative link in README.md and `docs/` names a file that exists;
//! - the settings table of `docs/configuration.md` lists exactly the `Butler.butlerAgent` keys
//!   the binary accepts (read from the binary's own error for an unknown key), and every
//!   `BUTLER_*` variable the code reads is documented there, and none that it does not read
//!   (its key, variable and default columns are held to the code's table of settings by the
//!   unit tests in `src/config/table/tests.rs`);
//! - every `butler-agent …` command in a `sh` block or in a table of the docs parses as written
//!   (the binary's `--help` after the command's own arguments: an unknown flag or subcommand
//!   fails), and the one-shot ones (`host`, `id`, `telemetry preview|status`) run as written
//!   and exit 0, with telemetry pointed at nothing.

use crate::common;
use crate::common::{NOWHERE, Telemetry};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every page under `docs/`.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("docs/ readable").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    assert!(docs.len() >= 5, "docs/ holds the reference pages: {docs:?}");
    pages.extend(docs);
    pages
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn every_relative_link_names_an_existing_file() {
    let mut problems = Vec::new();
    for page in pages() {
        let text = read(&page);
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = &rest[..end];
            if target.contains("://") || target.starts_with('#') || target.starts_with("mailto:") {
                continue;
            }
            let file = target.split('#').next().unwrap_or_default();
            let dir = page.parent().expect("a page has a directory");
            if !dir.join(file).exists() {
                problems.push(format!("{}: link to {target}", page.display()));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The first column of every table row of `docs/configuration.md`'s settings table, unquoted.
fn settings_table_keys() -> BTreeSet<String> {
    let text = read(&repo().join("docs/configuration.md"));
    let table = text
        .split("| `Butler.butlerAgent.` |")
        .nth(1)
        .expect("docs/configuration.md has the settings table");
    table
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('|').nth(1))
        .map(|c| c.trim().trim_matches('`').to_string())
        .collect()
}

#[test]
fn settings_table_lists_exactly_the_keys_the_binary_accepts() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, "Butler:\n  butlerAgent:\n    notASetting: 1\n").expect("writable");
    let out = common::agent(Telemetry::Off)
        .args(["telemetry", "status", "--config"])
        .arg(&file)
        .output()
        .expect("the agent runs");
    assert_eq!(
        out.status.code(),
        Some(64),
        "an unknown key is a usage error"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let list = err
        .split("expected one of ")
        .nth(1)
        .and_then(|l| l.split(" (").next())
        .unwrap_or_else(|| panic!("the error lists the accepted keys: {err}"));
    let accepted: BTreeSet<String> = list
        .split(',')
        .map(|k| k.trim().trim_matches('`').to_string())
        .collect();
    assert_eq!(settings_table_keys(), accepted);
}

/// `"BUTLER_…"` string literals in the library's sources (tests excluded).
fn variables_in_code() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).expect("src readable") {
            let p = e.expect("src readable").path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs")
                && p.file_name().is_none_or(|n| n != "tests.rs")
            {
                let text = read(&p);
                // Unit tests at the end of a file do not count as reading a variable (test-only
                // helpers further up, `#[cfg(test)]` items that are not a module, do not end it).
                let text = text.split("#[cfg(test)]\nmod ").next().unwrap_or_default();
                for (i, _) in text.match_indices("\"BUTLER_") {
                    let name: String = text[i + 1..]
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    // `env!("…")` is the build's environment, not the agent's.
                    let build_time = text[..i].ends_with("env!(");
                    if text[i + 1 + name.len()..].starts_with('"') && !build_time {
                        out.insert(name);
                    }
                }
            }
        }
    }
    let mut vars = BTreeSet::new();
    walk(&repo().join("src"), &mut vars);
    vars
}

#[test]
fn every_variable_the_code_reads_is_documented_and_no_other() {
    let doc = read(&repo().join("docs/configuration.md"));
    let code = variables_in_code();
    assert!(code.contains("BUTLER_POSTHOG_HOST"), "{code:?}");
    let undocumented: Vec<_> = code
        .iter()
        .filter(|v| !doc.contains(&format!("`{v}")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "not in docs/configuration.md: {undocumented:?}"
    );
    let mut documented = BTreeSet::new();
    for (i, _) in doc.match_indices("`BUTLER_") {
        let name: String = doc[i + 1..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        documented.insert(name);
    }
    let unknown: Vec<_> = documented.difference(&code).collect();
    assert!(
        unknown.is_empty(),
        "documented but not read by src/: {unknown:?}"
    );
}

/// Every `butler-agent …` command the docs show: lines of `sh` blocks, and code spans in
/// table rows, with `./target/release/` and `/` prefixes and comments removed.
fn commands() -> Vec<(String, Vec<String>)> {
    let mut found = Vec::new();
    for page in pages() {
        let text = read(&page);
        let name = page
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let mut in_sh = false;
        for line in text.lines() {
            if line.starts_with("```") {
                in_sh = line == "```sh";
                continue;
            }
            let candidates: Vec<String> = if in_sh {
                vec![
                    line.split(" #")
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                ]
            } else if line.starts_with("| `butler-agent") {
                line.split('`')
                    .nth(1)
                    .map(str::to_string)
                    .into_iter()
                    .collect()
            } else {
                Vec::new()
            };
            for c in candidates {
                let c = c.trim_end_matches('&').trim();
                let words: Vec<&str> = c.split_whitespace().collect();
                let Some(at) = words.iter().position(|w| {
                    *w == "butler-agent" || w.ends_with("/butler-agent") && !w.contains(':')
                }) else {
                    continue;
                };
                // Environment assignments before the binary are the shell's, not the agent's.
                if words[..at].iter().any(|w| !w.contains('=')) {
                    continue;
                }
                let args: Vec<String> = words[at + 1..]
                    .iter()
                    .take_while(|w| !w.starts_with('|') && !w.starts_with('>'))
                    .map(|w| w.to_string())
                    .collect();
                found.push((name.clone(), args));
            }
        }
    }
    found
}

/// Table cells write optional parts as `[--json]`, values as `ADDR` or `FILE`: the concrete
/// commands they stand for (with and without each optional part).
fn expand(args: &[String]) -> Vec<Vec<String>> {
    let value = |w: &str| match w {
        "ADDR" => Some("127.0.0.1:0"),
        "FILE" | "DIR" => Some("x"),
        _ => None,
    };
    let mut out: Vec<Vec<String>> = vec![Vec::new()];
    let mut words = args.iter().filter(|a| *a != "(default)").peekable();
    while let Some(a) = words.next() {
        if let Some(opt) = a.strip_prefix('[') {
            // `[--json]`, or `[--out FILE]` across two words.
            let mut part = vec![opt.trim_end_matches(']').to_string()];
            if !a.ends_with(']') {
                let next = words
                    .next()
                    .map(|w| w.trim_end_matches(']'))
                    .unwrap_or_default();
                part.push(value(next).unwrap_or(next).to_string());
            }
            let mut with = out.clone();
            for v in &mut with {
                v.extend(part.iter().cloned());
            }
            out.extend(with);
        } else {
            for v in &mut out {
                v.push(value(a).unwrap_or(a).to_string());
            }
        }
    }
    out
}

#[test]
fn every_documented_command_parses_and_the_one_shot_ones_run() {
    let cmds = commands();
    assert!(cmds.len() >= 10, "the docs show commands: {cmds:?}");
    let mut problems = Vec::new();
    for (page, args) in &cmds {
        for args in expand(args) {
            // Parses: help after the arguments fails on an unknown flag or subcommand.
            let out = common::agent(Telemetry::To(NOWHERE))
                .args(&args)
                .arg("--help")
                .current_dir(repo())
                .output()
                .expect("the agent runs");
            if !out.status.success() {
                problems.push(format!(
                    "{page}: `butler-agent {}` does not parse: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
                continue;
            }
            let one_shot = matches!(args.first().map(String::as_str), Some("host" | "id"))
                || args.first().is_some_and(|a| a == "telemetry")
                    && matches!(args.get(1).map(String::as_str), Some("preview" | "status"));
            if one_shot {
                let out = common::agent(Telemetry::To(NOWHERE))
                    .args(&args)
                    .current_dir(repo())
                    .output()
                    .expect("the agent runs");
                if !out.status.success() {
                    problems.push(format!(
                        "{page}: `butler-agent {}` exits {:?}: {}",
                        args.join(" "),
                        out.status.code(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
