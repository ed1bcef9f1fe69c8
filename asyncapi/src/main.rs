//! Writes the AsyncAPI documents of every service (`<service>.yaml` and
//! `<service>.json`) to a folder, or with `--check` compares them with the files
//! there and fails, naming each file that differs, when they are not up to date.
//!
//! ```sh
//! cargo run -p asyncapi -- --out docs/asyncapi           # regenerate
//! cargo run -p asyncapi -- --out docs/asyncapi --check   # what CI runs
//! ```

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "AsyncAPI 3.0 documents of the FTGO services, generated from the protobuf contract")]
struct Args {
    /// The folder of the documents.
    #[arg(long, default_value = "docs/asyncapi")]
    out: PathBuf,
    /// Compare with the files in the folder instead of writing them; exit 1 when
    /// any differs, is missing, or is not generated any more.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("asyncapi: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Writes or checks every file; `Ok(false)` when a check found a difference.
fn run(args: &Args) -> Result<bool, Box<dyn std::error::Error>> {
    let mut files = Vec::new();
    for service in asyncapi::services()? {
        let document = asyncapi::document(&service)?;
        files.push((format!("{service}.yaml"), asyncapi::to_yaml(&document)?));
        files.push((format!("{service}.json"), asyncapi::to_json(&document)?));
    }
    if !args.check {
        std::fs::create_dir_all(&args.out)?;
        for (name, content) in &files {
            let path = args.out.join(name);
            std::fs::write(&path, content)?;
            println!("wrote {}", path.display());
        }
        return Ok(true);
    }

    let mut stale = Vec::new();
    for (name, content) in &files {
        let path = args.out.join(name);
        match std::fs::read_to_string(&path) {
            Ok(committed) if committed == *content => {}
            Ok(committed) => stale.push(format!(
                "{} differs from the generated document ({})",
                path.display(),
                first_difference(&committed, content)
            )),
            Err(error) => stale.push(format!("{}: {error}", path.display())),
        }
    }
    if let Ok(entries) = std::fs::read_dir(&args.out) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let generated = name.ends_with(".yaml") || name.ends_with(".json");
            if generated && !files.iter().any(|(file, _)| *file == name) {
                stale.push(format!("{} is not generated any more (delete it)", entry.path().display()));
            }
        }
    }
    if stale.is_empty() {
        println!("asyncapi: {} documents in {} are up to date", files.len(), args.out.display());
        return Ok(true);
    }
    for problem in &stale {
        eprintln!("asyncapi: {problem}");
    }
    eprintln!(
        "asyncapi: the documents are out of date with the protos; regenerate them with\n    cargo run -p asyncapi -- --out {}",
        args.out.display()
    );
    Ok(false)
}

/// Where two texts first differ, as "line N: committed … / generated …".
fn first_difference(committed: &str, generated: &str) -> String {
    let mut committed_lines = committed.lines();
    let mut generated_lines = generated.lines();
    for line in 1.. {
        match (committed_lines.next(), generated_lines.next()) {
            (Some(a), Some(b)) if a == b => continue,
            (None, None) => return "trailing whitespace".into(),
            (a, b) => {
                return format!(
                    "line {line}: committed {:?}, generated {:?}",
                    a.unwrap_or("<end of file>"),
                    b.unwrap_or("<end of file>")
                );
            }
        }
    }
    String::new()
}
