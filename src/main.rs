//! `pmxcfs`: the cluster file system daemon and the tools
//! that move a tree between the C daemon's `config.db` and the store.

mod cli;
mod cluster;
mod control;
mod corosync_conf;
mod daemon;
mod db_tools;
mod lock;
mod notify;
mod status_report;

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

/// Daemon logging: stderr in the foreground, syslog (daemon facility)
/// otherwise, as the C daemon.
fn init_daemon_logging(debug: bool, foreground: bool) {
    if foreground {
        return init_logging(debug);
    }
    let default = if debug { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // SAFETY: a static NUL-terminated identity string.
    unsafe { libc::openlog(c"pmxcfs".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| SyslogWriter(Vec::new()))
        .with_ansi(false)
        .without_time()
        .init();
}

/// Collects one formatted event and sends it to syslog on drop.
struct SyslogWriter(Vec<u8>);

impl std::io::Write for SyslogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogWriter {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let line = text.trim_end().replace('\0', " ");
        let priority = if line.contains("ERROR") {
            libc::LOG_ERR
        } else if line.contains("WARN") {
            libc::LOG_WARNING
        } else {
            libc::LOG_INFO
        };
        if let Ok(message) = std::ffi::CString::new(line) {
            // SAFETY: a "%s" format with one NUL-terminated argument.
            unsafe { libc::syslog(priority, c"%s".as_ptr(), message.as_ptr()) };
        }
    }
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
            init_daemon_logging(options.debug, options.foreground);
            ("daemon", daemon::run(&options).map_err(Into::into))
        }
        Command::ImportDb(args) => {
            init_logging(false);
            ("import-db", db_tools::import_db(&args).map_err(Into::into))
        }
        Command::ExportDb(args) => {
            init_logging(false);
            ("export-db", db_tools::export_db(&args).map_err(Into::into))
        }
        Command::Control { request, run_dir } => {
            return match control::ask(&run_dir, request) {
                Ok(answer) if answer.starts_with("error: ") => {
                    eprint!("pmxcfs: {}", answer.trim_start_matches("error: "));
                    ExitCode::FAILURE
                }
                Ok(answer) => {
                    print!("{answer}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("pmxcfs: {error}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Dump { data_dir } => {
            init_logging(false);
            ("dump", db_tools::dump(&data_dir).map_err(Into::into))
        }
    };
    let result: Result<(), Box<dyn Error>> = result;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{name}: {}", error_chain(error.as_ref()));
            eprintln!("pmxcfs {name}: {}", error_chain(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}
