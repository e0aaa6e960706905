//! `pmxcfs`: the cluster file system daemon (not built yet) and the tools
//! that move a tree between the C daemon's `config.db` and the store.

mod cli;
mod db_tools;
mod lock;

use std::error::Error;
use std::io::IsTerminal;
use std::process::ExitCode;

use cli::Command;

fn init_logging(debug: bool) {
    let default = if debug { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// The error and its causes, `: `-separated.
fn error_chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(error) => {
            eprintln!("pmxcfs: {error}\n\n{}", error.help);
            return ExitCode::from(2);
        }
    };
    let (name, result) = match command {
        Command::Help(text) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        Command::Daemon(options) => {
            init_logging(options.debug);
            eprintln!(
                "pmxcfs: the daemon is not built yet; only import-db, export-db and dump work \
                 (see pmxcfs --help)"
            );
            return ExitCode::FAILURE;
        }
        Command::ImportDb(args) => {
            init_logging(false);
            ("import-db", db_tools::import_db(&args))
        }
        Command::ExportDb(args) => {
            init_logging(false);
            ("export-db", db_tools::export_db(&args))
        }
        Command::Dump { data_dir } => {
            init_logging(false);
            ("dump", db_tools::dump(&data_dir))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pmxcfs {name}: {}", error_chain(&error));
            ExitCode::FAILURE
        }
    }
}
