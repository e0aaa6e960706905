//! End-to-end file system load: the operations /etc/pve sees, timed one by one
//! through the kernel, on one or more directories in the same run (the daemon's
//! mountpoint against tmpfs, say).
//!
//! Phases, in order, on N files of `--size` bytes and M files of 512 KiB, in a fresh
//! subdirectory of each target: create (open O_CREAT|O_EXCL + write + close), stat,
//! read (open + read all + close), rewrite (PVE's atomic rewrite: write
//! `<name>.tmp.<pid>` then rename it over the file), readdir (list the N entries),
//! write512k, read512k, delete (unlink all). Every operation is timed on its own;
//! ops/s is ops ÷ the summed operation times (single thread, so 1 / mean latency).
//! A phase stops after `--seconds-max` even if unfinished, and the table says so.
//! After the phases that write, the directory listing and a sample of file contents
//! are checked, so a broken target fails instead of producing fast garbage figures.
//!
//! ```text
//! cargo build -p pmxcfs-bench --release --bin fsload
//! target/release/fsload --target /etc/pve --mount-tmpfs /run/fsload-tmpfs
//! target/release/fsload --target /tmp/a --target /tmp/b --files 200 --json
//! ```
//!
//! The ratio column is ops/s of the first target ÷ ops/s of the last one.
//! `--mount-tmpfs DIR` (root) mounts a tmpfs at DIR for the run and unmounts it at
//! the end, on error and on Ctrl-C too.

use std::ffi::{CString, c_int};
use std::fmt::Display;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Size of the big files (a pmxcfs file is limited to 1 MiB).
const BIG: usize = 512 * 1024;
/// Repeated phases (stat, readdir, read512k) run at least this long...
const MIN_PHASE: Duration = Duration::from_millis(200);
/// ...or this many rounds over the files for stat and read512k, whichever first.
const MAX_ROUNDS: usize = 10;
/// Listings in the readdir phase: at least this many, then until `MIN_PHASE`.
const MIN_READDIRS: usize = 20;
const MAX_READDIRS: usize = 10_000;
/// Files whose contents are checked after the run (evenly spread).
const VERIFY_SAMPLE: usize = 64;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

const USAGE: &str = "\
usage: fsload (--target DIR | --mount-tmpfs DIR)... [--files N] [--size BYTES]
              [--big-files M] [--seconds-max S] [--json]
  --target DIR       run the phases in a fresh subdirectory of DIR (repeatable)
  --mount-tmpfs DIR  (root) mount a tmpfs at DIR, use it as a target, unmount at the end
  --files N          small files (default 1000)
  --size BYTES       size of a small file (default 500)
  --big-files M      512 KiB files (default 20)
  --seconds-max S    time budget of each phase (default 20)
  --json             one JSON object per line instead of the table
The ratio column is ops/s of the first target / ops/s of the last one.";

enum TargetArg {
    Dir(PathBuf),
    Tmpfs(PathBuf),
}

struct Config {
    targets: Vec<TargetArg>,
    files: usize,
    size: usize,
    big_files: usize,
    seconds_max: Duration,
    json: bool,
}

fn parse_args() -> Result<Config, String> {
    let mut cfg = Config {
        targets: Vec::new(),
        files: 1000,
        size: 500,
        big_files: 20,
        seconds_max: Duration::from_secs(20),
        json: false,
    };
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy().into_owned();
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        if flag == "--json" {
            cfg.json = true;
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => args
                .next()
                .ok_or_else(|| format!("{flag} needs a value"))?
                .to_string_lossy()
                .into_owned(),
        };
        let num = |v: &str| {
            v.replace('_', "")
                .parse::<usize>()
                .map_err(|e| format!("{flag} {v}: {e}"))
        };
        match flag.as_str() {
            "--target" => cfg.targets.push(TargetArg::Dir(value.into())),
            "--mount-tmpfs" => cfg.targets.push(TargetArg::Tmpfs(value.into())),
            "--files" => cfg.files = num(&value)?,
            "--size" => cfg.size = num(&value)?,
            "--big-files" => cfg.big_files = num(&value)?,
            "--seconds-max" => {
                let s: f64 = value
                    .parse()
                    .map_err(|e| format!("--seconds-max {value}: {e}"))?;
                if !(s > 0.0 && s.is_finite()) {
                    return Err(format!("--seconds-max {value}: must be > 0"));
                }
                cfg.seconds_max = Duration::from_secs_f64(s);
            }
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    if cfg.targets.is_empty() {
        return Err(format!("no target given\n{USAGE}"));
    }
    Ok(cfg)
}

// ---- thin libc wrappers: the same system calls a C benchmark makes ----

fn cpath(path: &Path) -> Result<CString, String> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{}: NUL in path", path.display()))
}

fn check(ret: c_int) -> io::Result<c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// An open descriptor; `close` reports the close error, drop closes silently.
struct Fd(c_int);

impl Fd {
    fn open(path: &CString, flags: c_int) -> io::Result<Fd> {
        loop {
            // SAFETY: path is NUL-terminated; mode is read only with O_CREAT.
            match check(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, 0o644) }) {
                Ok(fd) => return Ok(Fd(fd)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            // SAFETY: the pointer and length describe a live slice.
            let n = unsafe { libc::write(self.0, data.as_ptr().cast(), data.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0"));
            }
            data = &data[n as usize..];
        }
        Ok(())
    }

    /// Reads to end of file into `buf` (grown if needed); returns the length.
    fn read_to_end(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let mut len = 0;
        loop {
            if len == buf.len() {
                buf.resize(buf.len() * 2 + 4096, 0);
            }
            let spare = &mut buf[len..];
            // SAFETY: the pointer and length describe a live mutable slice.
            let n = unsafe { libc::read(self.0, spare.as_mut_ptr().cast(), spare.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Ok(len);
            }
            len += n as usize;
        }
    }

    fn close(self) -> io::Result<()> {
        let fd = self.0;
        std::mem::forget(self);
        // SAFETY: fd is owned by us and closed exactly once (drop is skipped).
        // No retry on EINTR: on Linux the descriptor is gone either way.
        check(unsafe { libc::close(fd) }).map(|_| ())
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: fd is owned by us and not closed yet.
        unsafe { libc::close(self.0) };
    }
}

/// open(O_CREAT|O_EXCL|O_WRONLY) + write + close.
fn create_file(path: &CString, data: &[u8]) -> io::Result<()> {
    let fd = Fd::open(path, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY)?;
    fd.write_all(data)?;
    fd.close()
}

/// open(O_RDONLY) + read to EOF + close.
fn read_file(path: &CString, buf: &mut Vec<u8>) -> io::Result<usize> {
    let fd = Fd::open(path, libc::O_RDONLY)?;
    let len = fd.read_to_end(buf)?;
    fd.close()?;
    Ok(len)
}

fn stat_size(path: &CString) -> io::Result<i64> {
    // SAFETY: an all-zero `stat` is a valid value; path is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::stat(path.as_ptr(), &mut st) })?;
    Ok(st.st_size)
}

fn rename(from: &CString, to: &CString) -> io::Result<()> {
    // SAFETY: both paths are NUL-terminated.
    check(unsafe { libc::rename(from.as_ptr(), to.as_ptr()) }).map(|_| ())
}

fn unlink(path: &CString) -> io::Result<()> {
    // SAFETY: path is NUL-terminated.
    check(unsafe { libc::unlink(path.as_ptr()) }).map(|_| ())
}

fn fs_type(path: &Path) -> String {
    let Ok(c) = cpath(path) else {
        return "?".into();
    };
    // SAFETY: an all-zero `statfs` is a valid value; path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return "?".into();
    }
    match st.f_type as u64 & 0xffff_ffff {
        0xEF53 => "ext4".into(),
        0x0102_1994 => "tmpfs".into(),
        0x6573_5546 => "fuse".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x2FC1_2FC1 => "zfs".into(),
        0x794C_7630 => "overlayfs".into(),
        t => format!("fs 0x{t:x}"),
    }
}

extern "C" fn on_signal(_: c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// First SIGINT/SIGTERM: finish the current operation, clean up, exit.
/// The handler resets itself, so a second one kills the process.
fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic; sigaction is zeroed first.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(c_int) as *const () as usize;
            sa.sa_flags = libc::SA_RESETHAND | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

// ---- guards ----

/// A tmpfs mounted for the run; unmounted (and its directory removed if we
/// created it) on drop, so also on error and on panic.
struct TmpfsMount {
    dir: PathBuf,
    cdir: CString,
    created_dir: bool,
}

impl TmpfsMount {
    fn mount(dir: &Path) -> Result<TmpfsMount, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(format!("--mount-tmpfs {}: needs root", dir.display()));
        }
        let created_dir = !dir.exists();
        if created_dir {
            fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        let cdir = cpath(dir)?;
        // SAFETY: all strings are NUL-terminated.
        let ret = unsafe {
            libc::mount(
                c"fsload".as_ptr(),
                cdir.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"mode=0755".as_ptr().cast(),
            )
        };
        if ret != 0 {
            let e = io::Error::last_os_error();
            if created_dir {
                let _ = fs::remove_dir(dir);
            }
            return Err(format!("mount tmpfs on {}: {e}", dir.display()));
        }
        Ok(TmpfsMount {
            dir: dir.to_path_buf(),
            cdir,
            created_dir,
        })
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        // SAFETY: cdir is NUL-terminated.
        let mut ret = unsafe { libc::umount2(self.cdir.as_ptr(), 0) };
        if ret != 0 {
            // SAFETY: as above; lazy unmount if something still uses it.
            ret = unsafe { libc::umount2(self.cdir.as_ptr(), libc::MNT_DETACH) };
        }
        if ret != 0 {
            eprintln!(
                "fsload: WARNING: unmount tmpfs {}: {}",
                self.dir.display(),
                io::Error::last_os_error()
            );
        } else if self.created_dir {
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

/// The per-target work directory: removed with its contents on drop.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.0.symlink_metadata().is_ok()
            && let Err(e) = fs::remove_dir_all(&self.0)
        {
            eprintln!("fsload: WARNING: remove {}: {e}", self.0.display());
        }
    }
}

// ---- measurement ----

struct PhaseResult {
    name: &'static str,
    /// Per-operation latencies in ns, sorted.
    samples: Vec<u64>,
    /// Stopped by `--seconds-max` before finishing.
    truncated: bool,
}

impl PhaseResult {
    fn ops(&self) -> usize {
        self.samples.len()
    }
    fn busy_s(&self) -> f64 {
        self.samples.iter().sum::<u64>() as f64 / 1e9
    }
    fn ops_per_s(&self) -> Option<f64> {
        let busy = self.busy_s();
        (busy > 0.0).then(|| self.ops() as f64 / busy)
    }
    /// Nearest-rank percentile, in µs.
    fn pct_us(&self, p: f64) -> Option<f64> {
        let n = self.samples.len();
        if n == 0 {
            return None;
        }
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        Some(self.samples[rank.clamp(1, n) - 1] as f64 / 1e3)
    }
}

struct Phase {
    name: &'static str,
    start: Instant,
    deadline: Instant,
    samples: Vec<u64>,
    truncated: bool,
}

impl Phase {
    fn new(name: &'static str, cfg: &Config) -> Phase {
        let start = Instant::now();
        Phase {
            name,
            start,
            deadline: start + cfg.seconds_max,
            samples: Vec::new(),
            truncated: false,
        }
    }

    /// Checked before each operation: true once the time budget is used up.
    fn over_budget(&mut self) -> Result<bool, String> {
        if INTERRUPTED.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        if Instant::now() >= self.deadline {
            self.truncated = true;
        }
        Ok(self.truncated)
    }

    fn timed<T>(
        &mut self,
        what: &dyn Display,
        op: impl FnOnce() -> io::Result<T>,
    ) -> Result<T, String> {
        let t = Instant::now();
        let r = op();
        let ns = t.elapsed().as_nanos() as u64;
        match r {
            Ok(v) => {
                self.samples.push(ns);
                Ok(v)
            }
            Err(e) => Err(format!("{} {what}: {e}", self.name)),
        }
    }

    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    fn finish(mut self) -> PhaseResult {
        self.samples.sort_unstable();
        PhaseResult {
            name: self.name,
            samples: self.samples,
            truncated: self.truncated,
        }
    }
}

/// Deterministic content of file `i` at generation `generation` (0 create,
/// 1 rewrite, 2 big): a header naming both, then pseudo-random lowercase letters.
fn content(i: usize, generation: u32, size: usize) -> Vec<u8> {
    let mut v = format!("fsload gen {generation} file {i}\n").into_bytes();
    v.reserve(size.saturating_sub(v.len()));
    // splitmix64 seed, xorshift64 stream.
    let mut x = (i as u64) << 8 ^ u64::from(generation);
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x = (x ^ (x >> 31)) | 1;
    while v.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        for b in x.to_le_bytes() {
            v.push(b'a' + b % 26);
        }
        if v.len() % 64 >= 56 {
            v.push(b'\n');
        }
    }
    v.truncate(size);
    v
}

/// All phases on one target, in a fresh subdirectory of `base`.
/// Creates and writes each file in one timed operation (create and
/// write512k); returns the phase and how many files were created.
fn create_phase<N: Display>(
    name: &'static str,
    cfg: &Config,
    names: &[N],
    paths: &[CString],
    generation: u32,
    size: usize,
) -> Result<(PhaseResult, usize), String> {
    let mut ph = Phase::new(name, cfg);
    let mut created = 0;
    for (i, (name, path)) in names.iter().zip(paths).enumerate() {
        if ph.over_budget()? {
            break;
        }
        let data = content(i, generation, size);
        ph.timed(name, || create_file(path, &data))?;
        created += 1;
    }
    Ok((ph.finish(), created))
}

fn run_target(cfg: &Config, idx: usize, base: &Path) -> Result<Vec<PhaseResult>, String> {
    let pid = std::process::id();
    let dir = base.join(format!("fsload-{pid}-{idx}"));
    fs::create_dir(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let _guard = WorkDir(dir.clone());

    let (n, m, size) = (cfg.files, cfg.big_files, cfg.size);
    let names: Vec<String> = (0..n).map(|i| format!("f{i:06}")).collect();
    let big_names: Vec<String> = (0..m).map(|j| format!("big{j:04}")).collect();
    let paths = names
        .iter()
        .map(|s| cpath(&dir.join(s)))
        .collect::<Result<Vec<_>, _>>()?;
    let tmps = names
        .iter()
        .map(|s| cpath(&dir.join(format!("{s}.tmp.{pid}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let big_paths = big_names
        .iter()
        .map(|s| cpath(&dir.join(s)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut gens = vec![0u32; n];
    let mut buf = vec![0u8; size.max(BIG) + 4096];
    let mut results = Vec::new();

    // create
    let (phase, created) = create_phase("create", cfg, &names, &paths, 0, size)?;
    results.push(phase);

    // stat
    let mut ph = Phase::new("stat", cfg);
    'rounds: for round in 1.. {
        for i in 0..created {
            if ph.over_budget()? {
                break 'rounds;
            }
            let len = ph.timed(&names[i], || stat_size(&paths[i]))?;
            if len != size as i64 {
                return Err(format!("stat {}: size {len}, wrote {size}", names[i]));
            }
        }
        if round >= MAX_ROUNDS || ph.elapsed() >= MIN_PHASE {
            break;
        }
    }
    results.push(ph.finish());

    // read
    let mut ph = Phase::new("read", cfg);
    for i in 0..created {
        if ph.over_budget()? {
            break;
        }
        let len = ph.timed(&names[i], || read_file(&paths[i], &mut buf))?;
        if buf[..len] != content(i, 0, size) {
            return Err(format!(
                "read {}: content differs from what was written",
                names[i]
            ));
        }
    }
    results.push(ph.finish());

    // rewrite: PVE's file_set_contents (O_EXCL temp file, then rename over)
    let mut ph = Phase::new("rewrite", cfg);
    for i in 0..created {
        if ph.over_budget()? {
            break;
        }
        let data = content(i, 1, size);
        ph.timed(&names[i], || {
            create_file(&tmps[i], &data)?;
            rename(&tmps[i], &paths[i])
        })?;
        gens[i] = 1;
    }
    results.push(ph.finish());

    // readdir
    let mut ph = Phase::new("readdir", cfg);
    let mut listings = 0;
    while !ph.over_budget()? {
        let count = ph.timed(&dir.display(), || {
            let mut count = 0usize;
            for entry in fs::read_dir(&dir)? {
                entry?;
                count += 1;
            }
            Ok(count)
        })?;
        if count != created {
            return Err(format!(
                "readdir {}: {count} entries, expected {created}",
                dir.display()
            ));
        }
        listings += 1;
        if listings >= MAX_READDIRS || (listings >= MIN_READDIRS && ph.elapsed() >= MIN_PHASE) {
            break;
        }
    }
    results.push(ph.finish());

    // write512k
    let (phase, big_created) = create_phase("write512k", cfg, &big_names, &big_paths, 2, BIG)?;
    results.push(phase);

    // read512k
    let mut ph = Phase::new("read512k", cfg);
    'rounds: for round in 1.. {
        for j in 0..big_created {
            if ph.over_budget()? {
                break 'rounds;
            }
            let len = ph.timed(&big_names[j], || read_file(&big_paths[j], &mut buf))?;
            // Contents checked on the first round, lengths on every one.
            if len != BIG || (round == 1 && buf[..len] != content(j, 2, BIG)) {
                return Err(format!(
                    "read512k {}: content differs from what was written",
                    big_names[j]
                ));
            }
        }
        if round >= MAX_ROUNDS || ph.elapsed() >= MIN_PHASE {
            break;
        }
    }
    results.push(ph.finish());

    verify(
        &dir,
        &names[..created],
        &paths,
        &gens,
        &big_names[..big_created],
        size,
        &mut buf,
    )?;

    // delete
    let mut ph = Phase::new("delete", cfg);
    for (name, path) in names[..created]
        .iter()
        .zip(&paths)
        .chain(big_names[..big_created].iter().zip(&big_paths))
    {
        if ph.over_budget()? {
            break;
        }
        ph.timed(name, || unlink(path))?;
    }
    let delete_done = !ph.truncated;
    results.push(ph.finish());
    if delete_done {
        let left: Vec<_> = fs::read_dir(&dir)
            .map_err(|e| format!("readdir {}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        if !left.is_empty() {
            return Err(format!(
                "delete: {} entries left, e.g. {:?}",
                left.len(),
                left[0]
            ));
        }
        fs::remove_dir(&dir).map_err(|e| format!("rmdir {}: {e}", dir.display()))?;
    }
    Ok(results)
}

/// Untimed check before delete: the listing holds exactly the expected names
/// (no temp file left behind, nothing lost), and a sample of small files plus
/// one big file hold what was last written to them.
fn verify(
    dir: &Path,
    names: &[String],
    paths: &[CString],
    gens: &[u32],
    big_names: &[String],
    size: usize,
    buf: &mut Vec<u8>,
) -> Result<(), String> {
    let mut listed: Vec<String> = fs::read_dir(dir)
        .map_err(|e| format!("verify: readdir {}: {e}", dir.display()))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<_>>()
        .map_err(|e| format!("verify: readdir {}: {e}", dir.display()))?;
    listed.sort();
    let mut expected: Vec<String> = names.iter().chain(big_names).cloned().collect();
    expected.sort();
    if listed != expected {
        let missing = expected.iter().find(|n| listed.binary_search(n).is_err());
        let extra = listed.iter().find(|n| expected.binary_search(n).is_err());
        return Err(format!(
            "verify: listing of {} has {} entries, expected {} (missing e.g. {missing:?}, unexpected e.g. {extra:?})",
            dir.display(),
            listed.len(),
            expected.len()
        ));
    }
    let n = names.len();
    let step = n.div_ceil(VERIFY_SAMPLE).max(1);
    for i in (0..n).step_by(step).chain(n.checked_sub(1)) {
        let len =
            read_file(&paths[i], buf).map_err(|e| format!("verify: read {}: {e}", names[i]))?;
        if buf[..len] != content(i, gens[i], size) {
            return Err(format!(
                "verify: {} does not hold its generation-{} content ({len} bytes read, {size} expected)",
                names[i], gens[i]
            ));
        }
    }
    if let Some(last) = big_names.last() {
        let j = big_names.len() - 1;
        let path = cpath(&dir.join(last))?;
        let len = read_file(&path, buf).map_err(|e| format!("verify: read {last}: {e}"))?;
        if buf[..len] != content(j, 2, BIG) {
            return Err(format!(
                "verify: {last} does not hold what was written ({len} bytes)"
            ));
        }
    }
    Ok(())
}

// ---- output ----

fn fmt_rate(x: Option<f64>) -> String {
    let Some(x) = x else { return "-".into() };
    if x < 100.0 {
        return format!("{x:.1}");
    }
    let digits = format!("{:.0}", x);
    let mut out = String::new();
    for (k, c) in digits.chars().enumerate() {
        if k > 0 && (digits.len() - k) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_us(x: Option<f64>) -> String {
    match x {
        None => "-".into(),
        Some(x) if x < 1000.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.0}"),
    }
}

fn ratio(first: &PhaseResult, last: &PhaseResult) -> Option<f64> {
    Some(first.ops_per_s()? / last.ops_per_s()?)
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_num(x: Option<f64>) -> String {
    match x {
        Some(x) if x.is_finite() => format!("{x:.3}"),
        _ => "null".into(),
    }
}

struct Target {
    path: PathBuf,
    fs: String,
    mounted: bool,
}

fn print_table(cfg: &Config, targets: &[Target], results: &[Vec<PhaseResult>]) {
    println!(
        "fsload: {} files x {} B, {} files x 512 KiB, phase budget {:?}; readdir op = listing of {} entries",
        cfg.files, cfg.size, cfg.big_files, cfg.seconds_max, cfg.files
    );
    for (k, t) in targets.iter().enumerate() {
        let how = if t.mounted { ", mounted by fsload" } else { "" };
        println!("  [{}] {} ({}{how})", k + 1, t.path.display(), t.fs);
    }
    let many = targets.len() > 1;
    let last = targets.len();
    print!(
        "{:<10} {:>4} {:>8} {:>11} {:>10} {:>10}",
        "phase", "tgt", "ops", "ops/s", "p50 µs", "p99 µs"
    );
    if many {
        print!("  [1]/[{last}] ops/s");
    }
    println!();
    let mut truncated = false;
    for p in 0..results[0].len() {
        for (k, res) in results.iter().enumerate() {
            let r = &res[p];
            let mark = if r.truncated { "*" } else { " " };
            truncated |= r.truncated;
            print!(
                "{:<10} {:>4} {:>7}{mark} {:>11} {:>10} {:>10}",
                if k == 0 { r.name } else { "" },
                format!("[{}]", k + 1),
                r.ops(),
                fmt_rate(r.ops_per_s()),
                fmt_us(r.pct_us(50.0)),
                fmt_us(r.pct_us(99.0)),
            );
            if many && k == 0 {
                match ratio(r, &results[last - 1][p]) {
                    Some(x) if x < 1.0 => print!("  {x:.3} (1/{:.1})", 1.0 / x),
                    Some(x) => print!("  {x:.3}"),
                    None => print!("  -"),
                }
            }
            println!();
        }
    }
    if truncated {
        println!(
            "* stopped by the {:?} phase budget before finishing",
            cfg.seconds_max
        );
    }
}

fn print_json(cfg: &Config, targets: &[Target], results: &[Vec<PhaseResult>]) {
    for (k, (t, res)) in targets.iter().zip(results).enumerate() {
        for r in res {
            println!(
                "{{\"target\":{},\"path\":{},\"fs\":{},\"phase\":\"{}\",\"ops\":{},\"ops_per_s\":{},\"p50_us\":{},\"p99_us\":{},\"busy_s\":{:.6},\"truncated\":{},\"files\":{},\"size\":{},\"big_files\":{}}}",
                k + 1,
                json_str(&t.path.to_string_lossy()),
                json_str(&t.fs),
                r.name,
                r.ops(),
                json_num(r.ops_per_s()),
                json_num(r.pct_us(50.0)),
                json_num(r.pct_us(99.0)),
                r.busy_s(),
                r.truncated,
                cfg.files,
                cfg.size,
                cfg.big_files
            );
        }
    }
    if targets.len() > 1 {
        let (first, last) = (&results[0], &results[results.len() - 1]);
        for (a, b) in first.iter().zip(last) {
            println!(
                "{{\"ratio\":{},\"phase\":\"{}\",\"first\":{},\"last\":{}}}",
                json_num(ratio(a, b)),
                a.name,
                json_str(&targets[0].path.to_string_lossy()),
                json_str(&targets[targets.len() - 1].path.to_string_lossy())
            );
        }
    }
}

fn run() -> Result<(), String> {
    let cfg = parse_args()?;
    install_signal_handlers();
    // Mounted before any run and unmounted when `mounts` drops: after the work
    // directories' guards, also on error and on panic.
    let mut mounts = Vec::new();
    let mut targets = Vec::new();
    for t in &cfg.targets {
        let (path, mounted) = match t {
            TargetArg::Dir(p) => (p.clone(), false),
            TargetArg::Tmpfs(p) => {
                mounts.push(TmpfsMount::mount(p)?);
                (p.clone(), true)
            }
        };
        if !path.is_dir() {
            return Err(format!("{}: not a directory", path.display()));
        }
        let fs = fs_type(&path);
        targets.push(Target { path, fs, mounted });
    }
    let mut results = Vec::new();
    for (k, t) in targets.iter().enumerate() {
        eprintln!("fsload: [{}] {} ({})", k + 1, t.path.display(), t.fs);
        let res = run_target(&cfg, k + 1, &t.path)
            .map_err(|e| format!("FAILED on {}: {e}", t.path.display()))?;
        results.push(res);
    }
    if cfg.json {
        print_json(&cfg, &targets, &results);
    } else {
        print_table(&cfg, &targets, &results);
    }
    drop(mounts);
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fsload: {e}");
            ExitCode::FAILURE
        }
    }
}
