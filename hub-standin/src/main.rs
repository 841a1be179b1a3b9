//! `span-marker-hub-standin`: the stand-in Hub as a process, for tests in other languages.
//! It seeds the dataset repositories its flags name, prints the endpoint
//! (`http://127.0.0.1:PORT`) as the first line of its standard output, and serves until its
//! standard input reaches end of file (the test's pipe closing) or it is killed.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use span_marker_hub_standin::StandInHub;

const USAGE: &str = "usage: span-marker-hub-standin [--token TOKEN:USER[:write]]... \
                     [--dataset ID[@BRANCH]=DIR]... [--private ID]... [--tree-page-size N]";

const HELP: &str = "
Serves a stand-in Hugging Face Hub on 127.0.0.1 until standard input closes.

  --token TOKEN:USER[:write]   accept the bearer TOKEN as USER (with write access with `:write`)
  --dataset ID[@BRANCH]=DIR    commit the files under DIR (recursively) onto BRANCH (default
                               main; e.g. refs/convert/parquet) of the dataset repository ID
  --private ID                 make the dataset ID private to the user of its namespace
  --tree-page-size N           entries per page of a tree listing (default 1000)

The endpoint (http://127.0.0.1:PORT) is the first line of standard output.";

/// One `--dataset`: the files of a folder for a branch of a dataset.
struct Seed {
    id: String,
    branch: String,
    files: BTreeMap<String, Vec<u8>>,
}

/// What the flags ask for.
#[derive(Default)]
struct Options {
    tokens: Vec<(String, String, bool)>,
    datasets: Vec<Seed>,
    private: Vec<String>,
    tree_page_size: Option<usize>,
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}\n{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("span-marker-hub-standin: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let hub = match StandInHub::start() {
        Ok(hub) => hub,
        Err(e) => {
            eprintln!("span-marker-hub-standin: cannot serve: {e}");
            return ExitCode::FAILURE;
        }
    };
    for (token, user, write) in &options.tokens {
        hub.add_token(token, user, *write);
    }
    for seed in options.datasets {
        hub.add_dataset(&seed.id, &seed.branch, seed.files);
    }
    for id in &options.private {
        hub.set_dataset_private(id, true);
    }
    if let Some(size) = options.tree_page_size {
        hub.set_tree_page_size(size);
    }
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{}", hub.endpoint())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    drop(stdout);
    // Serves (from the hub's own thread) until standard input ends; a read error ends it too.
    let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
    drop(hub);
    ExitCode::SUCCESS
}

/// The options of `args`, `None` for `--help`, or what is wrong with them.
fn parse(args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut options = Options::default();
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value)),
            _ => (arg.clone(), None),
        };
        if !matches!(
            flag.as_str(),
            "--token" | "--dataset" | "--private" | "--tree-page-size"
        ) {
            return Err(format!("unknown argument {arg:?}"));
        }
        let value = match inline {
            Some(value) => value.to_owned(),
            None => args.next().ok_or_else(|| format!("{flag} needs a value"))?,
        };
        match flag.as_str() {
            "--token" => options.tokens.push(token(&value)?),
            "--dataset" => options.datasets.push(dataset(&value)?),
            "--private" => options.private.push(value),
            _ => {
                let size = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("--tree-page-size {value:?}: not a positive number"))?;
                options.tree_page_size = Some(size);
            }
        }
    }
    for id in &options.private {
        if !options.datasets.iter().any(|seed| &seed.id == id) {
            return Err(format!("--private {id}: no --dataset seeds {id}"));
        }
    }
    Ok(Some(options))
}

/// `TOKEN:USER[:write]`.
fn token(value: &str) -> Result<(String, String, bool), String> {
    let bad = || format!("--token {value:?}: expected TOKEN:USER or TOKEN:USER:write");
    let mut parts = value.splitn(3, ':');
    let (token, user) = (parts.next().unwrap_or(""), parts.next().ok_or_else(bad)?);
    let write = match parts.next() {
        None => false,
        Some("write") => true,
        Some(_) => return Err(bad()),
    };
    if token.is_empty() || user.is_empty() {
        return Err(bad());
    }
    Ok((token.to_owned(), user.to_owned(), write))
}

/// `ID[@BRANCH]=DIR`, with the files under `DIR`.
fn dataset(value: &str) -> Result<Seed, String> {
    let bad = |why: &str| format!("--dataset {value:?}: {why}");
    let (target, dir) = value
        .split_once('=')
        .ok_or_else(|| bad("expected ID[@BRANCH]=DIR"))?;
    let (id, branch) = target.split_once('@').unwrap_or((target, "main"));
    let valid_id = id
        .split_once('/')
        .is_some_and(|(n, r)| !n.is_empty() && !r.is_empty() && !r.contains('/'));
    if !valid_id {
        return Err(bad("the id is namespace/name"));
    }
    if branch.is_empty() || dir.is_empty() {
        return Err(bad("expected ID[@BRANCH]=DIR"));
    }
    let dir = PathBuf::from(dir);
    if !dir.is_dir() {
        return Err(bad("DIR is not a directory"));
    }
    let mut files = BTreeMap::new();
    read_files(&dir, "", &mut files).map_err(|e| bad(&e))?;
    Ok(Seed {
        id: id.to_owned(),
        branch: branch.to_owned(),
        files,
    })
}

/// Every file under `dir` (recursively, links followed) into `files`, by its path below the
/// top folder (`prefix` so far), `/`-separated.
fn read_files(
    dir: &Path,
    prefix: &str,
    files: &mut BTreeMap<String, Vec<u8>>,
) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("{}: the name is not UTF-8", path.display()))?;
        let relative = format!("{prefix}{name}");
        if path.is_dir() {
            read_files(&path, &format!("{relative}/"), files)?;
        } else {
            let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            files.insert(relative, data);
        }
    }
    Ok(())
}
