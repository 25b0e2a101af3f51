//! The README and the guide tell the truth about the commands: the README stays short, every
//! relative link names a file that exists, and every documented `cargo run -p … -- …` line names
//! a subcommand and flags the binary has (checked against its `--help`).
//!
//! Needs the workspace's binaries (`cargo test --release --workspace` builds them all).

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn docs() -> Vec<PathBuf> {
    let mut v = vec![root().join("README.md")];
    let mut guide: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    guide.sort();
    v.extend(guide);
    v
}

#[test]
fn the_readme_is_short_and_keeps_its_two_commands() {
    let text = std::fs::read_to_string(root().join("README.md")).unwrap();
    let n = text.lines().count();
    assert!(
        n <= 150,
        "README.md has {n} lines; the guide is docs/GUIDE.md"
    );
    for cmd in [
        "cargo run --release -p reid-prune",
        "cargo test --release --workspace",
    ] {
        assert!(text.contains(cmd), "README.md lost `{cmd}`");
    }
    // .ci/run runs the README's test command
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(ci.contains("cargo test --release --workspace"));
}

#[test]
fn every_relative_link_names_a_file() {
    for doc in docs() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for (i, line) in text.lines().enumerate() {
            for target in line.split("](").skip(1).filter_map(|s| s.split(')').next()) {
                let path = target.split('#').next().unwrap_or("");
                if path.is_empty() || path.contains("://") {
                    continue;
                }
                let at = doc.parent().unwrap().join(path);
                assert!(
                    at.exists(),
                    "{}:{}: link to {target}: no such file",
                    doc.display(),
                    i + 1
                );
            }
        }
    }
}

/// `(bin, arguments)` of every `cargo run … -p PKG [--bin B] [--] ARGS` in a code block (the
/// binary is PKG's unless `--bin` names one), continuation lines joined and `# comments` dropped.
fn documented_commands(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut in_code = false;
    let mut pending = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if !in_code {
            continue;
        }
        let code = match line.find(" #") {
            Some(i) => &line[..i],
            None if line.trim_start().starts_with('#') => "",
            None => line,
        };
        pending.push_str(code.trim_end().trim_end_matches('\\'));
        pending.push(' ');
        if code.trim_end().ends_with('\\') {
            continue;
        }
        let logical = std::mem::take(&mut pending);
        let Some(at) = logical.find("cargo run") else {
            continue;
        };
        let words: Vec<&str> = logical[at..].split_whitespace().collect();
        let Some(p) = words.iter().position(|w| *w == "-p") else {
            continue;
        };
        let bin = match words.iter().position(|w| *w == "--bin") {
            Some(b) if b < words.len() - 1 => words[b + 1].to_string(),
            _ => words[p + 1].to_string(),
        };
        let args = match words.iter().position(|w| w.trim_start_matches('[') == "--") {
            Some(d) => words[d + 1..].iter().map(|w| w.to_string()).collect(),
            None => Vec::new(),
        };
        out.push((bin, args));
    }
    out
}

fn binary(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_reid-prune")).with_file_name(name);
    assert!(
        p.is_file(),
        "{} is not built: run the workspace's tests (cargo test --release --workspace)",
        p.display()
    );
    p
}

#[test]
fn every_documented_command_and_flag_exists() {
    let mut checked = 0;
    for doc in docs() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for (bin, args) in documented_commands(&text) {
            // the words of the line, without the usage brackets and alternatives
            let words: Vec<String> = args
                .iter()
                .flat_map(|a| {
                    a.split('|')
                        .map(|w| w.trim_matches(|c| c == '[' || c == ']').to_string())
                })
                .filter(|w| !w.is_empty())
                .collect();
            // the subcommand path: leading words the help lists as commands (`data stats`)
            let help_of = |path: &[String]| {
                let out = Command::new(binary(&bin))
                    .args(path)
                    .arg("--help")
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}: `{bin} {}`: no such command ({})",
                    doc.display(),
                    path.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            let mut path: Vec<String> = Vec::new();
            let mut help_text = help_of(&path);
            for w in words.iter().take_while(|w| !w.starts_with('-')) {
                let commands = listed_commands(&help_text);
                if !commands.contains(w) {
                    // a word after a command is its value; a first word must be a command
                    assert!(
                        !path.is_empty() || commands.is_empty(),
                        "{}: `{bin} {w}`: no such command (it has: {})",
                        doc.display(),
                        commands.join(", ")
                    );
                    break;
                }
                path.push(w.clone());
                help_text = help_of(&path);
            }
            for flag in words.iter().filter(|w| w.starts_with("--")) {
                let flag = flag.split('=').next().unwrap();
                assert!(
                    lists_flag(&help_text, flag),
                    "{}: `{bin} {}` documents {flag}, which its --help does not list",
                    doc.display(),
                    path.join(" ")
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} documented commands found");
}

/// The subcommands a clap `--help` lists under "Commands:".
fn listed_commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| !w.starts_with('-'))
        .map(String::from)
        .collect()
}

/// Whether a clap `--help` defines `flag` (`  --flag <V>` or `  -f, --flag`), not just names it
/// in a description.
fn lists_flag(help: &str, flag: &str) -> bool {
    help.lines().any(|l| {
        let t = l.trim_start();
        let t = match t.split_once(", ") {
            Some((short, rest)) if short.len() == 2 && short.starts_with('-') => rest,
            _ => t,
        };
        t.strip_prefix(flag)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '=', '<', '[', '.']))
    })
}

#[test]
fn the_command_check_refuses_what_no_binary_has() {
    let help = "Usage: x [COMMAND]\n\nCommands:\n  run   Run a grid\n  help  Print this\n\nOptions:\n  -q, --quick  Smaller (see --seeds)\n      --out <OUT>  Where\n";
    assert_eq!(listed_commands(help), ["run", "help"]);
    assert!(lists_flag(help, "--quick") && lists_flag(help, "--out"));
    // named in a description only, or a prefix of a real flag
    assert!(!lists_flag(help, "--seeds") && !lists_flag(help, "--ou"));
}
