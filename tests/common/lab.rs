//! The corosync lab of tests/cluster/lab.sh as a guard: `Lab::up` builds
//! it, `Drop` tears it down (processes in its namespaces, the namespaces,
//! /dev/shm leftovers, the directory), also when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;

pub fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn lab_script() -> PathBuf {
    manifest_dir().join("tests/cluster/lab.sh")
}

pub fn checked(what: &str, output: std::io::Result<Output>) -> Output {
    let output = output.unwrap_or_else(|error| panic!("{what}: cannot run: {error}"));
    assert!(
        output.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A temp dir for a lab test; `PMXCFS_FAULT_KEEP=1` keeps it (the daemons'
/// logs and data dirs; the lab's namespaces and processes still go) and
/// says where. Returns it and whether it is kept (for [`Lab::keep`]).
pub fn temp_base(prefix: &str) -> (tempfile::TempDir, bool) {
    let keep = std::env::var_os("PMXCFS_FAULT_KEEP").is_some();
    let base = tempfile::Builder::new()
        .prefix(prefix)
        .disable_cleanup(keep)
        .tempdir()
        .expect("temp dir");
    if keep {
        eprintln!("keeping {}", base.path().display());
    }
    (base, keep)
}

/// The lab; `Drop` tears it down whatever happened.
pub struct Lab {
    pub dir: PathBuf,
    pub nodes: u32,
    /// Keep the directory (logs, data dirs) at the teardown.
    pub keep: bool,
    down: bool,
}

impl Lab {
    pub fn up(nodes: u32, dir: PathBuf) -> Lab {
        // The guard exists before `up` runs: a half-built lab is torn down too.
        let lab = Lab {
            dir,
            nodes,
            keep: false,
            down: false,
        };
        checked(
            "lab.sh up",
            Command::new(lab_script())
                .arg("up")
                .arg(nodes.to_string())
                .arg(&lab.dir)
                .output(),
        );
        lab
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(lab_script());
        command.env("LAB_DIR", &self.dir).args(args);
        command
    }

    pub fn run(&self, args: &[&str]) -> String {
        let output = checked(&format!("lab.sh {args:?}"), self.command(args).output());
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn tag(&self) -> String {
        std::fs::read_to_string(self.dir.join("tag"))
            .expect("lab tag")
            .trim()
            .to_owned()
    }

    pub fn down(&mut self) {
        if self.down {
            return;
        }
        self.down = true;
        checked(
            "lab.sh down",
            Command::new(lab_script())
                .arg("down")
                .arg(&self.dir)
                .output(),
        );
    }

    pub fn print_logs(&self) {
        for node in 1..=self.nodes {
            let log = self.dir.join(format!("n{node}/corosync.log"));
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(25).collect();
            eprintln!("--- {} (tail)", log.display());
            tail.iter().rev().for_each(|line| eprintln!("{line}"));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.down {
            return;
        }
        if thread::panicking() {
            self.print_logs();
        }
        self.down = true;
        let mut down = Command::new(lab_script());
        if self.keep {
            down.env("LAB_KEEP", "1");
        }
        match down.arg("down").arg(&self.dir).output() {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "lab.sh down failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) => eprintln!("lab.sh down: cannot run: {error}"),
        }
    }
}
