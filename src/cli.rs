//! Command-line parsing, by hand: the C daemon's options (`-d -f -l`) plus
//! the Rust daemon's directories, or one of the database tools as the first
//! argument. No argument that names a tool means "run the daemon".

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

pub const USAGE: &str = "\
Usage:
  pmxcfs [-d] [-f] [-l] [--mountpoint DIR] [--data-dir DIR] [--run-dir DIR]
         [--pid-file FILE] [--nodename NAME] [--node-ip ADDR]
         [--corosync-conf FILE] [--ipc-service NAME] [--rrd-dir DIR]
         [--rrdcached-socket PATH]
      Run the cluster file system daemon. Cluster mode (corosync CPG) when
      the tree holds corosync.conf and -l is not given; a new data dir first
      imports the host's corosync.conf, as the C daemon does.
      -d, --debug       turn on debug messages
      -f, --foreground  do not daemonize (log to stderr; otherwise syslog)
      -l, --local       force local mode (ignore corosync.conf, force quorum)
      --sync-writes     fdatasync before acknowledging each change (every
                        acknowledged write survives a power cut; default: the
                        journal is synced within 10 ms, as ARCHITECTURE.md says)
      --no-uring        serve /dev/fuse only (otherwise FUSE over io_uring is used,
                        one queue per CPU, when the kernel offers it; the daemon
                        switches the fuse module's enable_uring on)
      --ipc-service     the libqb IPC service name (default pve2, what
                        PVE::IPCC connects to; another name lets test daemons
                        run side by side in one network namespace)
      --rrd-dir         where the RRD files of the graphs go
      --rrdcached-socket  rrdcached's socket; when it does not answer within
                        1 s the files are written directly (librrd)
      defaults: --mountpoint /etc/pve --data-dir /var/lib/pve-cluster
                --run-dir /run/pve-cluster --pid-file /var/run/pve-cluster.pid
                --corosync-conf /etc/corosync/corosync.conf (the host copy)
                --rrd-dir /var/lib/rrdcached/db
                --rrdcached-socket /var/run/rrdcached.sock
                --nodename from uname (up to the first dot)
      PMXCFS_LOCK_TIMEOUT_SECS replaces the 120 s lock lifetime (for tests).
  pmxcfs import-db --sqlite FILE --data-dir DIR
      Build the store in DIR from the C daemon's config.db FILE.
  pmxcfs export-db --sqlite FILE --data-dir DIR
      Write the store in DIR as a new config.db FILE for the C daemon.
  pmxcfs dump --data-dir DIR
      Print the tree as JSON lines.
  pmxcfs status [--json] [--run-dir DIR]
      What the running daemon is doing (from its control socket).
  pmxcfs metrics [--run-dir DIR]
      The same as Prometheus text, for a node exporter's textfile collector.
  pmxcfs help [COMMAND]

Logging goes to stderr; RUST_LOG sets the filter (default: info).
Exit status: 0 success, 1 failure, 2 usage error.";

pub const IMPORT_DB_HELP: &str = "\
Usage: pmxcfs import-db --sqlite FILE --data-dir DIR

Builds the store in DIR from FILE, a config.db written by the C pmxcfs.
FILE is opened read-only and immutable: nothing is created next to it, and a
database with a non-empty FILE-wal (a running or crashed C daemon) is refused.
A database the C daemon would refuse to load is refused too (duplicate names,
missing parents, a file as parent, a directory with data, unknown types,
vmids used twice), and DIR is left without a tree.
DIR is created (mode 0700) if missing; it must not hold a tree yet. The
command holds DIR/.pmxcfs.lockfile while it runs, and fails if another
process (a running pmxcfs) holds it.";

pub const EXPORT_DB_HELP: &str = "\
Usage: pmxcfs export-db --sqlite FILE --data-dir DIR

Writes the store in DIR to FILE, a new sqlite database that the C pmxcfs
loads unchanged: its schema, WAL mode, mode 0600, one row per entry.
FILE must not exist; it appears only complete. The command holds
DIR/.pmxcfs.lockfile (pmxcfs must not be running) and includes changes that
are still in the store's journal.";

pub const DUMP_HELP: &str = "\
Usage: pmxcfs dump --data-dir DIR

Prints the tree of the store in DIR as JSON lines, one entry a line, in
inode order, as rows of the C daemon's `tree` table: the root is the
`__version__` row (inode 0). Keys: inode, parent, version, writer, mtime,
type (4 directory, 8 file), name, size, sha256 (hex, of the data; of empty
input for no data).
Names that are not UTF-8 are printed with a lossy conversion (each invalid
sequence becomes U+FFFD), so such a name cannot be told apart from others.
The dump shows the store's last checkpoint: changes a running daemon holds
only in its journal are not shown.";

pub const STATUS_HELP: &str = "\
Usage: pmxcfs status [--json] [--run-dir DIR]
       pmxcfs metrics [--run-dir DIR]

Asks the running daemon, through its control socket DIR/pmxcfs.sock (default
DIR /run/pve-cluster; root only), what it is doing: mode, quorum, members with
their state and IPs, both DFSM groups (mode, epoch, leader, queues), parked
requests, the store's journal and last checkpoint, lock directories and their
expiry, IPC connections, the RRD writer's queue and counters, kernel cache
invalidations sent. --json prints it as JSON; `metrics` as Prometheus text.
Exit status 1 when no daemon answers.";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Daemon(DaemonOptions),
    ImportDb(DbArgs),
    ExportDb(DbArgs),
    Dump {
        data_dir: PathBuf,
    },
    /// Ask the running daemon (`status`, `status-json`, `metrics`).
    Control {
        request: &'static str,
        run_dir: PathBuf,
    },
    /// Print this help text and exit successfully.
    Help(&'static str),
}

/// The daemon's options (the C daemon's `-d -f -l`, and the directories
/// and identity the Rust daemon takes on its command line).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DaemonOptions {
    pub debug: bool,
    pub foreground: bool,
    pub local: bool,
    /// fdatasync the journal before acknowledging each change.
    pub sync_writes: bool,
    pub mountpoint: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub run_dir: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub nodename: Option<OsString>,
    pub node_ip: Option<OsString>,
    pub corosync_conf: Option<PathBuf>,
    pub no_uring: bool,
    pub ipc_service: Option<OsString>,
    pub rrd_dir: Option<PathBuf>,
    pub rrdcached_socket: Option<PathBuf>,
}

/// Arguments of `import-db` and `export-db`.
#[derive(Debug, PartialEq, Eq)]
pub struct DbArgs {
    pub sqlite: PathBuf,
    pub data_dir: PathBuf,
}

/// A command line that does not parse; `help` is the text to point to.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UsageError {
    pub message: String,
    pub help: &'static str,
}

fn usage(message: impl Into<String>, help: &'static str) -> UsageError {
    UsageError {
        message: message.into(),
        help,
    }
}

/// One parsed option: a long or short name and, for `--name=value`, the
/// value glued to it.
enum Token {
    Long(String, Option<OsString>),
    Short(char),
    Positional(OsString),
}

/// Splits arguments into options and positionals. Short flags may be
/// grouped (`-df`); long options take `--name value` or `--name=value`.
fn tokenize(args: Vec<OsString>) -> Result<Vec<Token>, UsageError> {
    let mut tokens = Vec::new();
    for arg in args {
        let bytes = arg.as_bytes();
        if let Some(long) = bytes.strip_prefix(b"--") {
            let (name, value) = match long.iter().position(|&byte| byte == b'=') {
                Some(at) => (
                    &long[..at],
                    Some(OsStr::from_bytes(&long[at + 1..]).to_owned()),
                ),
                None => (long, None),
            };
            let name = std::str::from_utf8(name)
                .map_err(|_| usage(format!("unknown option {}", arg.display()), USAGE))?;
            tokens.push(Token::Long(name.to_owned(), value));
        } else if bytes.len() > 1 && bytes[0] == b'-' {
            for &byte in &bytes[1..] {
                if !byte.is_ascii_alphanumeric() {
                    return Err(usage(format!("unknown option {}", arg.display()), USAGE));
                }
                tokens.push(Token::Short(char::from(byte)));
            }
        } else {
            tokens.push(Token::Positional(arg));
        }
    }
    Ok(tokens)
}

/// Takes the value of a long option: glued (`--x=v`) or the next argument.
fn option_value(
    name: &str,
    glued: Option<OsString>,
    rest: &mut std::vec::IntoIter<Token>,
    help: &'static str,
) -> Result<OsString, UsageError> {
    let value = match glued {
        Some(value) => value,
        None => match rest.next() {
            Some(Token::Positional(value)) => value,
            _ => return Err(usage(format!("--{name} needs a value"), help)),
        },
    };
    if value.is_empty() {
        return Err(usage(format!("--{name} needs a non-empty value"), help));
    }
    Ok(value)
}

fn set_once<T>(
    slot: &mut Option<T>,
    value: T,
    name: &str,
    help: &'static str,
) -> Result<(), UsageError> {
    if slot.replace(value).is_some() {
        return Err(usage(format!("--{name} given twice"), help));
    }
    Ok(())
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, UsageError> {
    let args: Vec<OsString> = args.into_iter().collect();
    match args.first().map(|first| first.as_bytes()) {
        Some(b"import-db") => Ok(parse_db_tool(args, IMPORT_DB_HELP)?
            .map_or(Command::Help(IMPORT_DB_HELP), Command::ImportDb)),
        Some(b"export-db") => Ok(parse_db_tool(args, EXPORT_DB_HELP)?
            .map_or(Command::Help(EXPORT_DB_HELP), Command::ExportDb)),
        Some(b"dump") => parse_dump(args),
        Some(b"status") => parse_control(args, true),
        Some(b"metrics") => parse_control(args, false),
        Some(b"help") => parse_help(&args[1..]),
        Some(first) if !first.starts_with(b"-") => Err(usage(
            format!("unknown command {:?}", String::from_utf8_lossy(first)),
            USAGE,
        )),
        _ => parse_daemon(args),
    }
}

fn parse_help(topics: &[OsString]) -> Result<Command, UsageError> {
    match topics {
        [] => Ok(Command::Help(USAGE)),
        [topic] => match topic.as_bytes() {
            b"import-db" => Ok(Command::Help(IMPORT_DB_HELP)),
            b"export-db" => Ok(Command::Help(EXPORT_DB_HELP)),
            b"dump" => Ok(Command::Help(DUMP_HELP)),
            b"status" | b"metrics" => Ok(Command::Help(STATUS_HELP)),
            other => Err(usage(
                format!("no help for {:?}", String::from_utf8_lossy(other)),
                USAGE,
            )),
        },
        _ => Err(usage("help takes at most one command", USAGE)),
    }
}

fn parse_daemon(args: Vec<OsString>) -> Result<Command, UsageError> {
    let mut options = DaemonOptions::default();
    let mut tokens = tokenize(args)?.into_iter();
    while let Some(token) = tokens.next() {
        match token {
            Token::Short('h') => return Ok(Command::Help(USAGE)),
            Token::Short('d') => options.debug = true,
            Token::Short('f') => options.foreground = true,
            Token::Short('l') => options.local = true,
            Token::Short(other) => return Err(usage(format!("unknown option -{other}"), USAGE)),
            Token::Long(name, glued) => {
                let flag = |flag: &mut bool| match glued {
                    None => {
                        *flag = true;
                        Ok(())
                    }
                    Some(_) => Err(usage(format!("--{name} takes no value"), USAGE)),
                };
                match name.as_str() {
                    "help" => return Ok(Command::Help(USAGE)),
                    "debug" => flag(&mut options.debug)?,
                    "foreground" => flag(&mut options.foreground)?,
                    "local" => flag(&mut options.local)?,
                    "sync-writes" => flag(&mut options.sync_writes)?,
                    "no-uring" => flag(&mut options.no_uring)?,
                    "mountpoint" | "data-dir" | "run-dir" | "pid-file" | "corosync-conf"
                    | "rrd-dir" | "rrdcached-socket" => {
                        let value = PathBuf::from(option_value(&name, glued, &mut tokens, USAGE)?);
                        let slot = match name.as_str() {
                            "mountpoint" => &mut options.mountpoint,
                            "data-dir" => &mut options.data_dir,
                            "pid-file" => &mut options.pid_file,
                            "corosync-conf" => &mut options.corosync_conf,
                            "rrd-dir" => &mut options.rrd_dir,
                            "rrdcached-socket" => &mut options.rrdcached_socket,
                            _ => &mut options.run_dir,
                        };
                        set_once(slot, value, &name, USAGE)?;
                    }
                    "nodename" | "node-ip" | "ipc-service" => {
                        let value = option_value(&name, glued, &mut tokens, USAGE)?;
                        let slot = match name.as_str() {
                            "nodename" => &mut options.nodename,
                            "node-ip" => &mut options.node_ip,
                            _ => &mut options.ipc_service,
                        };
                        set_once(slot, value, &name, USAGE)?;
                    }
                    _ => return Err(usage(format!("unknown option --{name}"), USAGE)),
                }
            }
            Token::Positional(value) => {
                return Err(usage(
                    format!("unexpected argument {}", value.display()),
                    USAGE,
                ));
            }
        }
    }
    Ok(Command::Daemon(options))
}

/// Parses `--name value` options of a tool; returns the values in the
/// order of `names`, each given exactly once. `Ok(None)` means help.
fn parse_tool_options<const N: usize>(
    args: Vec<OsString>,
    names: [&str; N],
    help: &'static str,
) -> Result<Option<[OsString; N]>, UsageError> {
    let mut values: [Option<OsString>; N] = std::array::from_fn(|_| None);
    let mut tokens = tokenize(args.into_iter().skip(1).collect())?.into_iter();
    while let Some(token) = tokens.next() {
        match token {
            Token::Short('h') => return Ok(None),
            Token::Long(name, _) if name == "help" => return Ok(None),
            Token::Long(name, glued) => {
                let index = names
                    .iter()
                    .position(|known| *known == name)
                    .ok_or_else(|| usage(format!("unknown option --{name}"), help))?;
                let value = option_value(&name, glued, &mut tokens, help)?;
                set_once(&mut values[index], value, &name, help)?;
            }
            Token::Short(other) => return Err(usage(format!("unknown option -{other}"), help)),
            Token::Positional(value) => {
                return Err(usage(
                    format!("unexpected argument {}", value.display()),
                    help,
                ));
            }
        }
    }
    let mut result: [OsString; N] = std::array::from_fn(|_| OsString::new());
    for (index, value) in values.into_iter().enumerate() {
        result[index] =
            value.ok_or_else(|| usage(format!("--{} is required", names[index]), help))?;
    }
    Ok(Some(result))
}

/// `Ok(None)` means help was asked for.
fn parse_db_tool(args: Vec<OsString>, help: &'static str) -> Result<Option<DbArgs>, UsageError> {
    Ok(
        parse_tool_options(args, ["sqlite", "data-dir"], help)?.map(|[sqlite, data_dir]| DbArgs {
            sqlite: sqlite.into(),
            data_dir: data_dir.into(),
        }),
    )
}

/// `status [--json] [--run-dir DIR]`, `metrics [--run-dir DIR]`.
fn parse_control(args: Vec<OsString>, status: bool) -> Result<Command, UsageError> {
    let mut json = false;
    let mut run_dir = None;
    let mut tokens = tokenize(args[1..].to_vec())?.into_iter();
    while let Some(token) = tokens.next() {
        match token {
            Token::Short('h') => return Ok(Command::Help(STATUS_HELP)),
            Token::Long(name, _) if name == "help" => return Ok(Command::Help(STATUS_HELP)),
            Token::Long(name, None) if name == "json" && status => json = true,
            Token::Long(name, glued) if name == "run-dir" => {
                let value = option_value(&name, glued, &mut tokens, STATUS_HELP)?;
                set_once(&mut run_dir, PathBuf::from(value), &name, STATUS_HELP)?;
            }
            Token::Long(name, _) => {
                return Err(usage(format!("unknown option --{name}"), STATUS_HELP));
            }
            Token::Short(other) => {
                return Err(usage(format!("unknown option -{other}"), STATUS_HELP));
            }
            Token::Positional(value) => {
                return Err(usage(
                    format!("unexpected argument {}", value.display()),
                    STATUS_HELP,
                ));
            }
        }
    }
    let request = match (status, json) {
        (true, false) => "status",
        (true, true) => "status-json",
        (false, _) => "metrics",
    };
    Ok(Command::Control {
        request,
        run_dir: run_dir.unwrap_or_else(|| PathBuf::from("/run/pve-cluster")),
    })
}

fn parse_dump(args: Vec<OsString>) -> Result<Command, UsageError> {
    match parse_tool_options(args, ["data-dir"], DUMP_HELP)? {
        None => Ok(Command::Help(DUMP_HELP)),
        Some([data_dir]) => Ok(Command::Dump {
            data_dir: data_dir.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str]) -> Result<Command, UsageError> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn no_command_means_the_daemon() {
        assert_eq!(
            parse_str(&[]),
            Ok(Command::Daemon(DaemonOptions::default()))
        );
        let Ok(Command::Daemon(options)) = parse_str(&[
            "-df",
            "-l",
            "--data-dir",
            "/d",
            "--mountpoint=/m",
            "--nodename",
            "pve1",
            "--node-ip=10.0.0.1",
            "--run-dir",
            "/r",
        ]) else {
            panic!("daemon options should parse");
        };
        assert!(options.debug && options.foreground && options.local);
        assert_eq!(options.data_dir, Some(PathBuf::from("/d")));
        assert_eq!(options.mountpoint, Some(PathBuf::from("/m")));
        assert_eq!(options.run_dir, Some(PathBuf::from("/r")));
        assert_eq!(options.nodename, Some(OsString::from("pve1")));
        assert_eq!(options.node_ip, Some(OsString::from("10.0.0.1")));
    }

    #[test]
    fn tools_take_their_options() {
        assert_eq!(
            parse_str(&["import-db", "--data-dir=/d", "--sqlite", "/c.db"]),
            Ok(Command::ImportDb(DbArgs {
                sqlite: "/c.db".into(),
                data_dir: "/d".into()
            }))
        );
        assert_eq!(
            parse_str(&["dump", "--data-dir", "/d"]),
            Ok(Command::Dump {
                data_dir: "/d".into()
            })
        );
        assert_eq!(parse_str(&["dump", "--help"]), Ok(Command::Help(DUMP_HELP)));
        assert_eq!(
            parse_str(&["help", "export-db"]),
            Ok(Command::Help(EXPORT_DB_HELP))
        );
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        for (args, expected) in [
            (
                &["import-db", "--sqlite", "/c.db"][..],
                "--data-dir is required",
            ),
            (&["import-db", "--sqlite"], "--sqlite needs a value"),
            (
                &["import-db", "--sqlite", "a", "--sqlite", "b"],
                "--sqlite given twice",
            ),
            (&["export-db", "--bogus", "x"], "unknown option --bogus"),
            (
                &["dump", "--data-dir", "/d", "extra"],
                "unexpected argument extra",
            ),
            (
                &["dump", "--data-dir="],
                "--data-dir needs a non-empty value",
            ),
            (&["frobnicate"], "unknown command \"frobnicate\""),
            (&["-x"], "unknown option -x"),
            (&["-d", "dump"], "unexpected argument dump"),
            (&["--local=yes"], "--local takes no value"),
        ] {
            let error = parse_str(args).expect_err(expected);
            assert_eq!(error.message, expected, "{args:?}");
        }
    }
}
