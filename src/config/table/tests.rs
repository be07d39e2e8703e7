use super::*;
use crate::config::{AgentFile, MapEnv, parse_str};

use std::collections::BTreeSet;

/// The key under `Butler.butlerAgent`, e.g. `posthogHost`.
fn key(s: &Setting) -> &'static str {
    s.path
        .strip_prefix("Butler.butlerAgent.")
        .unwrap_or_else(|| panic!("{} is not under Butler.butlerAgent", s.path))
}

fn table_keys() -> BTreeSet<String> {
    SETTINGS.iter().map(|s| key(s).to_string()).collect()
}

/// A value other than the default for each setting, as a variable or YAML scalar takes it.
fn other_value(s: &Setting) -> &'static str {
    match key(s) {
        "posthogHost" => "https://capture.example.com",
        "posthogKey" => "phc_another_project",
        "interval" => "2h",
        "startDelay" => "1m",
        "requestTimeout" => "10s",
        "maxRetries" => "2",
        "geoipDisable" => "false",
        "caFile" => "/etc/ca.pem",
        "healthEnable" => "false",
        "healthHost" => "127.0.0.1",
        "healthPort" => "12399",
        "stateDir" => "/state",
        "auditLog" => "/state/audit.jsonl",
        "auditLogMaxBytes" => "10",
        "shutdownGrace" => "2s",
        "butlerApiUrl" => "http://butler:8080",
        "requireButler" => "true",
        other => panic!("no other value for {other}: add one here"),
    }
}

#[test]
fn keys_and_variables_are_unique_and_under_the_agent_section() {
    let vars: BTreeSet<_> = SETTINGS.iter().map(|s| s.var).collect();
    assert_eq!(vars.len(), SETTINGS.len());
    assert_eq!(table_keys().len(), SETTINGS.len());
    assert!(SETTINGS.iter().all(|s| s.var.starts_with("BUTLER_")));
}

#[test]
fn the_file_accepts_exactly_the_keys_of_the_table() {
    // serde lists the keys of `AgentFile` in its error for an unknown one.
    let err = serde_json::from_str::<AgentFile>(r#"{"notASetting": 1}"#)
        .unwrap_err()
        .to_string();
    let list = err
        .split("expected one of ")
        .nth(1)
        .and_then(|l| l.split(" at line").next())
        .unwrap_or_else(|| panic!("serde lists the fields: {err}"));
    let accepted: BTreeSet<String> = list
        .split(',')
        .map(|k| k.trim().trim_matches('`').to_string())
        .collect();
    assert_eq!(accepted, table_keys());
}

#[test]
fn every_resolved_setting_is_in_the_table() {
    // The fields of `AgentSettings`, from its pretty debug form (one field a line), camel-cased.
    let debug = format!("{:#?}", AgentSettings::default());
    let fields: BTreeSet<String> = debug
        .lines()
        .filter_map(|l| l.strip_prefix("    "))
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split(':').next())
        // Only a variable, documented with the other variables: not a setting of the file.
        .filter(|f| *f != "butler_version")
        .map(|f| {
            let mut words = f.split('_');
            let first = words.next().unwrap_or_default().to_string();
            words.fold(first, |mut acc, w| {
                let mut c = w.chars();
                acc.extend(c.next().map(|c| c.to_ascii_uppercase()));
                acc.push_str(c.as_str());
                acc
            })
        })
        .collect();
    assert_eq!(fields, table_keys());
}

#[test]
fn each_variable_and_its_key_set_that_setting_and_no_other() {
    let default = AgentSettings::resolve(None, &MapEnv::default()).unwrap();
    for s in SETTINGS {
        let value = other_value(s);
        let from_env = AgentSettings::resolve(None, &MapEnv::new([(s.var, value)]))
            .unwrap_or_else(|e| panic!("{}: {e}", s.var));
        let yaml = format!("Butler:\n  butlerAgent:\n    {}: {value}\n", key(s));
        let (_, _, file) = parse_str(&yaml, "test.yaml").unwrap_or_else(|e| panic!("{yaml}: {e}"));
        let from_file = AgentSettings::resolve(file.as_ref(), &MapEnv::default())
            .unwrap_or_else(|e| panic!("{yaml}: {e}"));
        assert_eq!(from_env, from_file, "{} and {} differ", s.var, s.path);
        for other in SETTINGS {
            assert_eq!(
                (other.differs)(&default, &from_env),
                other.path == s.path,
                "setting {} seen as changing {}",
                s.var,
                other.path
            );
        }
    }
}

#[test]
fn the_defaults_shown_are_the_defaults() {
    let default = AgentSettings::resolve(None, &MapEnv::default()).unwrap();
    let mut checked = 0;
    for s in SETTINGS {
        // A value in one code span is given to the variable: nothing may change. Prose ("none",
        // "Butler's public project key") is for settings without a literal default.
        let Some(value) = s
            .default
            .strip_prefix('`')
            .and_then(|d| d.strip_suffix('`'))
            .filter(|d| !d.contains('`'))
        else {
            continue;
        };
        let set = AgentSettings::resolve(None, &MapEnv::new([(s.var, value)]))
            .unwrap_or_else(|e| panic!("{}={value}: {e}", s.var));
        assert_eq!(set, default, "{}: the default is not {value}", s.path);
        checked += 1;
    }
    assert!(checked >= 10, "most defaults are literal values: {checked}");
}

/// The settings table of `docs/configuration.md`: key, variable and default of each row.
fn docs_rows() -> Vec<(String, String, String)> {
    let text = include_str!("../../../docs/configuration.md");
    let table = text
        .split("| `Butler.butlerAgent.` | environment variable | default |")
        .nth(1)
        .expect("docs/configuration.md has the settings table");
    table
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|row| {
            let cells: Vec<&str> = row
                .split(" | ")
                .map(|c| c.trim_matches('|').trim())
                .collect();
            (
                cells[0].trim_matches('`').to_string(),
                cells[1].trim_matches('`').to_string(),
                cells[2].to_string(),
            )
        })
        .collect()
}

#[test]
fn the_documentation_table_shows_the_table() {
    let rows = docs_rows();
    let expected: Vec<(String, String, String)> = SETTINGS
        .iter()
        .map(|s| (key(s).into(), s.var.into(), s.default.into()))
        .collect();
    let wrong: Vec<String> = rows
        .iter()
        .zip(&expected)
        .filter(|(row, want)| row != want)
        .map(|(row, want)| format!("docs/configuration.md shows {row:?}; the table has {want:?}"))
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(rows.len(), expected.len(), "rows: {rows:#?}");
}

#[test]
fn every_setting_refuses_an_unquoted_non_finite_number() {
    // YAML's `.inf` reaches the tree as a string: a text setting not marked `text` would take it.
    for s in SETTINGS {
        for number in [".inf", "-.inf", ".nan"] {
            let yaml = format!("Butler:\n  butlerAgent:\n    {}: {number}\n", key(s));
            let refused = parse_str(&yaml, "test.yaml")
                .and_then(|(_, _, file)| AgentSettings::resolve(file.as_ref(), &MapEnv::default()))
                .is_err();
            assert!(refused, "{}: {number} was taken", s.path);
        }
    }
}
