//! docs/algorithms.md walks a researcher through making examples/beta-bernoulli from nothing;
//! this checks the page against that crate, so that neither can drift from the other. A block
//! after `<!-- file: PATH -->` must be the file at PATH byte for byte, one after
//! `<!-- excerpt: PATH -->` must appear in it, every file of the example must be shown or
//! quoted, and every line of a block after `<!-- commands -->` must be a command this test
//! runs (`cargo new`) or one listed in [`RUN_ELSEWHERE`] with the place that runs it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use justin_e2e::{example_dir, run, ScratchDir};

/// The walkthrough's commands that others run: the command, the file (from the repository's
/// root) that runs it, and what that file holds to run it.
const RUN_ELSEWHERE: [(&str, &str, &str); 7] = [
    (
        "cd examples/beta-bernoulli",
        "Makefile",
        "EXAMPLE_CARGO = cd $(EXAMPLE_DIR) && ",
    ),
    (
        "cargo test",
        "Makefile",
        "\t$(EXAMPLE_CARGO) test --locked\n",
    ),
    (
        "cargo clippy --all-targets -- -D warnings",
        "Makefile",
        "\t$(EXAMPLE_CARGO) clippy --locked --all-targets -- -D warnings\n",
    ),
    (
        "cargo build",
        "Makefile",
        "\t$(EXAMPLE_CARGO) build --locked\n",
    ),
    // Served::start_bin runs the binary with `serve`, the configuration the example's.
    (
        "cargo run -- serve",
        "tests/e2e/beta_bernoulli.rs",
        "Served::start_bin(&bin, dir.path(), &env, 0)",
    ),
    (
        "cargo run -- replay",
        "tests/e2e/beta_bernoulli.rs",
        r#"command(&bin, dir.path(), &env).arg("replay")"#,
    ),
    (
        "cargo run -- export --out study.csv",
        "tests/e2e/beta_bernoulli.rs",
        r#"command(&bin, dir.path(), &env).args(["export", "--out", "study.csv"])"#,
    ),
];

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// What a marker says about the fenced block after it.
#[derive(Debug, Clone, PartialEq)]
enum Marker {
    /// The block is the whole file (a path from the repository's root).
    File(String),
    /// The block appears in the file.
    Excerpt(String),
    /// The block's lines are shell commands.
    Commands,
}

/// Every marked block of the page: its marker and its text (each line with its line break).
fn marked_blocks(page: &str) -> Vec<(Marker, String)> {
    let mut blocks = Vec::new();
    let mut lines = page.lines();
    while let Some(line) = lines.next() {
        let marker = match line.trim() {
            "<!-- commands -->" => Marker::Commands,
            other => match other
                .strip_prefix("<!-- ")
                .and_then(|m| m.strip_suffix(" -->"))
                .and_then(|m| m.split_once(": "))
            {
                Some(("file", path)) => Marker::File(path.to_owned()),
                Some(("excerpt", path)) => Marker::Excerpt(path.to_owned()),
                _ => continue,
            },
        };
        let fence = lines.next().unwrap_or_default();
        assert!(
            fence.starts_with("```"),
            "{marker:?} must be followed by a fenced block, not {fence:?}"
        );
        let mut text = String::new();
        for line in lines.by_ref() {
            if line == "```" {
                break;
            }
            text.push_str(line);
            text.push('\n');
        }
        blocks.push((marker, text));
    }
    blocks
}

/// Every file of the example, from the repository's root, but its lockfile and what building
/// or running it in its directory leaves there (what .gitignore leaves out).
fn example_files() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut pending = vec![PathBuf::from("examples/beta-bernoulli")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(root().join(&dir)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let path = dir.join(&name);
            if ["target", "logs", "backups"].contains(&name.as_str()) {
                continue;
            }
            if root().join(&path).is_dir() {
                pending.push(path);
            } else if name != "Cargo.lock" && !name.contains(".db") && !name.ends_with(".csv") {
                found.insert(path.to_str().unwrap().to_owned());
            }
        }
    }
    found
}

#[test]
fn the_walkthrough_shows_the_example_as_it_is() {
    let blocks = marked_blocks(&read(&root().join("docs/algorithms.md")));
    let mut shown = BTreeSet::new();
    for (marker, text) in &blocks {
        match marker {
            Marker::File(path) => {
                assert_eq!(
                    text,
                    &read(&root().join(path)),
                    "docs/algorithms.md shows {path} otherwise than it is"
                );
                shown.insert(path.clone());
            }
            Marker::Excerpt(path) => {
                assert!(
                    read(&root().join(path)).contains(text.as_str()),
                    "docs/algorithms.md quotes from {path} what it does not hold:\n{text}"
                );
                shown.insert(path.clone());
            }
            Marker::Commands => {}
        }
    }
    assert_eq!(
        shown,
        example_files(),
        "docs/algorithms.md must show or quote every file of the example, and only those"
    );
    assert!(example_dir().join("Cargo.lock").is_file());
}

#[test]
fn every_command_of_the_walkthrough_is_run() {
    let page = read(&root().join("docs/algorithms.md"));
    let commands: Vec<String> = marked_blocks(&page)
        .into_iter()
        .filter(|(marker, _)| *marker == Marker::Commands)
        .flat_map(|(_, text)| text.lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| !line.trim().is_empty())
        .collect();
    let mut created = false;
    for command in &commands {
        if let Some(args) = command.strip_prefix("cargo new ") {
            // Run here, in a scratch directory standing for a checkout's root.
            let scratch = ScratchDir::new();
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let out = run(std::process::Command::new(cargo)
                .arg("new")
                .args(args.split_whitespace())
                .current_dir(scratch.path()));
            assert!(out.status.success(), "{command}: {}", out.stderr);
            let made = scratch.path().join("examples/beta-bernoulli");
            assert!(
                made.join("Cargo.toml").is_file(),
                "{command}: {}",
                out.stderr
            );
            assert!(
                made.join("src/main.rs").is_file(),
                "{command}: {}",
                out.stderr
            );
            assert!(
                read(&made.join("Cargo.toml")).contains("name = \"justin-beta-bernoulli\""),
                "{command}"
            );
            created = true;
            continue;
        }
        let Some((_, file, holds)) = RUN_ELSEWHERE.iter().find(|(c, _, _)| c == command) else {
            panic!(
                "docs/algorithms.md gives the command {command:?}, which nothing runs: \
                 run it in a test or in make test, and list it in RUN_ELSEWHERE"
            );
        };
        assert!(
            read(&root().join(file)).contains(holds),
            "{file} no longer runs {command:?} (it should hold {holds:?})"
        );
    }
    assert!(created, "the walkthrough creates the crate with cargo new");
    for (command, _, _) in RUN_ELSEWHERE {
        assert!(
            commands.iter().any(|c| c == command),
            "RUN_ELSEWHERE lists {command:?}, which docs/algorithms.md no longer gives"
        );
    }
}
