//! The README's configuration table cannot drift from the code: every `serve` flag and its
//! environment variable must have a row, and every row must name a real flag and variable.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

use clap::CommandFactory;
use creditd::config::Cli;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md")
}

/// (flag, variable) pairs declared in the code for `creditd serve`.
fn declared() -> Vec<(String, String)> {
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").expect("serve subcommand");
    serve
        .get_arguments()
        .filter_map(|arg| {
            let flag = arg.get_long()?;
            let env = arg.get_env()?.to_str()?.to_string();
            Some((format!("--{flag}"), env))
        })
        .collect()
}

#[test]
fn every_serve_flag_and_variable_has_a_row_in_the_readme_table() {
    let readme = readme();
    for (flag, env) in declared() {
        let row = readme
            .lines()
            .find(|line| line.starts_with('|') && line.contains(&format!("`{flag}`")))
            .unwrap_or_else(|| panic!("README has no configuration row for {flag}"));
        assert!(
            row.contains(&format!("`{env}`")),
            "README row for {flag} does not name {env}: {row}"
        );
    }
}

#[test]
fn every_readme_row_names_a_real_flag_and_variable() {
    let declared = declared();
    let readme = readme();
    let table_rows = readme
        .lines()
        .filter(|line| line.starts_with("| `--"))
        .collect::<Vec<_>>();
    assert!(table_rows.len() >= declared.len());
    for row in table_rows {
        let flag = row.split('`').nth(1).expect("flag cell");
        let env = row.split('`').nth(3).expect("variable cell");
        assert!(
            declared.iter().any(|(f, e)| f == flag && e == env),
            "README documents {flag} / {env}, which `creditd serve` does not declare"
        );
    }
}
