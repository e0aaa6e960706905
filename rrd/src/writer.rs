//! The writer thread: RRD updates leave the daemon's loop through a
//! bounded queue and are written here, through rrdcached (with a timeout)
//! or directly with librrd. Nothing the loop does waits for it: `submit`
//! takes a mutex that the thread holds only to pop an entry.
//!
//! The thread runs at nice 10, below the request threads.
//!
//! Bound: `queue_max` updates. When full, the oldest waiting update is
//! dropped and counted (a hung disk or rrdcached costs graph points, never
//! memory or the file system). After an rrdcached failure (timeout, refused
//! connection) updates go directly to the files for `backoff`, so a hung
//! rrdcached costs one timeout per backoff period, not one per update.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rrd::ops::update::{self, BatchTime, Datum};

use crate::key::{self, Update};
use crate::rrdcached::{Rrdcached, RrdcachedError};
use crate::schema;

/// Where and how the writer writes.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Base directory of the files (C: `/var/lib/rrdcached/db`).
    pub dir: PathBuf,
    /// rrdcached's socket (C: `/var/run/rrdcached.sock`); `None`: direct only.
    pub rrdcached: Option<PathBuf>,
    /// Longest wait for rrdcached's answer.
    pub timeout: Duration,
    /// Direct writes only, this long after an rrdcached failure.
    pub backoff: Duration,
    /// Updates waiting at most.
    pub queue_max: usize,
}

impl WriterConfig {
    pub fn new(dir: PathBuf, rrdcached: Option<PathBuf>) -> WriterConfig {
        WriterConfig {
            dir,
            rrdcached,
            timeout: Duration::from_secs(1),
            backoff: Duration::from_secs(10),
            queue_max: 4096,
        }
    }
}

/// What the writer did since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub submitted: u64,
    pub through_rrdcached: u64,
    pub direct: u64,
    pub created: u64,
    /// Neither rrdcached nor librrd took it (logged).
    pub failed: u64,
    /// Keys no file belongs to (logged, as the C daemon does).
    pub ignored: u64,
    /// Dropped because the queue was full, or waiting at shutdown.
    pub dropped: u64,
}

struct State {
    queue: VecDeque<(Vec<u8>, Vec<u8>)>,
    stop: bool,
    stats: Stats,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    queue_max: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The writer thread and its queue.
pub struct Writer {
    shared: Arc<Shared>,
    thread: Mutex<Option<(JoinHandle<()>, Receiver<()>)>>,
}

impl Writer {
    pub fn spawn(config: WriterConfig) -> std::io::Result<Writer> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                stop: false,
                stats: Stats::default(),
            }),
            wake: Condvar::new(),
            queue_max: config.queue_max.max(1),
        });
        let (done, finished) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("rrd-writer".into())
            .spawn({
                let shared = shared.clone();
                move || {
                    lower_priority();
                    run(&shared, &config);
                    let _ = done.send(());
                }
            })?;
        Ok(Writer {
            shared,
            thread: Mutex::new(Some((thread, finished))),
        })
    }

    /// Queues an update of `key` (without `rrd/`) to `value` (as stored).
    pub fn submit(&self, key: &[u8], value: &[u8]) {
        let mut state = self.shared.lock();
        if state.stop {
            return;
        }
        state.stats.submitted += 1;
        if state.queue.len() >= self.shared.queue_max {
            state.queue.pop_front();
            state.stats.dropped += 1;
            if state.stats.dropped.is_power_of_two() {
                tracing::warn!(
                    dropped = state.stats.dropped,
                    limit = self.shared.queue_max,
                    "RRD queue full: oldest updates dropped"
                );
            }
        }
        state.queue.push_back((key.to_vec(), value.to_vec()));
        drop(state);
        self.shared.wake.notify_one();
    }

    pub fn stats(&self) -> Stats {
        self.shared.lock().stats
    }

    /// Updates waiting now.
    pub fn pending(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Stops the thread after the update it is writing; waits for it at
    /// most `wait` (a thread stuck in a write is left behind: the process
    /// is about to exit). Waiting updates are dropped and counted.
    pub fn stop(&self, wait: Duration) -> bool {
        {
            let mut state = self.shared.lock();
            state.stop = true;
            let waiting = state.queue.len() as u64;
            state.queue.clear();
            state.stats.dropped += waiting;
            if waiting > 0 {
                tracing::info!(waiting, "RRD updates not written at shutdown");
            }
        }
        self.shared.wake.notify_all();
        let Some((thread, finished)) = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return true;
        };
        if finished.recv_timeout(wait).is_ok() {
            let _ = thread.join();
            true
        } else {
            tracing::warn!(?wait, "RRD writer still busy at shutdown; leaving it");
            false
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(1));
    }
}

/// The writer's nice value: on a busy node the CPU goes to FUSE and IPC
/// requests first (a burst of updates otherwise competes with them).
const WRITER_NICE: libc::c_int = 10;

fn lower_priority() {
    // SAFETY: plain syscalls; `who` is this thread (Linux nice values are
    // per thread).
    let result = unsafe {
        libc::setpriority(
            libc::PRIO_PROCESS,
            libc::gettid() as libc::id_t,
            WRITER_NICE,
        )
    };
    if result != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "RRD writer keeps the normal priority"
        );
    }
}

fn run(shared: &Shared, config: &WriterConfig) {
    let mut output = Output {
        config,
        rrdcached: config
            .rrdcached
            .as_deref()
            .map(|socket| Rrdcached::new(socket, config.timeout)),
        rrdcached_down_until: None,
    };
    loop {
        let (key, value) = {
            let mut state = shared.lock();
            loop {
                if state.stop {
                    return;
                }
                if let Some(item) = state.queue.pop_front() {
                    break item;
                }
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        let outcome = output.write(&key, &value);
        let mut state = shared.lock();
        let stats = &mut state.stats;
        match outcome {
            Outcome::Ignored => stats.ignored += 1,
            Outcome::Failed => stats.failed += 1,
            Outcome::Written { rrdcached, created } => {
                if rrdcached {
                    stats.through_rrdcached += 1;
                } else {
                    stats.direct += 1;
                }
                stats.created += u64::from(created);
            }
        }
    }
}

enum Outcome {
    Ignored,
    Failed,
    Written { rrdcached: bool, created: bool },
}

struct Output<'a> {
    config: &'a WriterConfig,
    rrdcached: Option<Rrdcached>,
    rrdcached_down_until: Option<Instant>,
}

impl Output<'_> {
    fn write(&mut self, key: &[u8], value: &[u8]) -> Outcome {
        let update = match key::parse(key, value) {
            Ok(update) => update,
            Err(error) => {
                tracing::warn!(key = %String::from_utf8_lossy(key), %error, "RRD update ignored");
                return Outcome::Ignored;
            }
        };
        let path = self.config.dir.join(&update.file);
        let created = match ensure_file(&path, &update) {
            Ok(created) => created,
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "cannot create RRD file");
                return Outcome::Failed;
            }
        };
        if self.rrdcached_usable()
            && let Some(rrdcached) = self.rrdcached.as_mut()
        {
            match rrdcached.update(&path, &update.values) {
                Ok(()) => {
                    return Outcome::Written {
                        rrdcached: true,
                        created,
                    };
                }
                Err(error @ (RrdcachedError::Io { .. } | RrdcachedError::Garbled(_))) => {
                    self.rrdcached_down_until = Some(Instant::now() + self.config.backoff);
                    tracing::warn!(
                        %error,
                        backoff = ?self.config.backoff,
                        "rrdcached unusable; writing RRD files directly for a while"
                    );
                }
                Err(error) => tracing::warn!(
                    path = %path.display(),
                    %error,
                    "RRD update via rrdcached failed; writing directly"
                ),
            }
        }
        match write_direct(&path, &update) {
            Ok(()) => Outcome::Written {
                rrdcached: false,
                created,
            },
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "RRD update failed");
                Outcome::Failed
            }
        }
    }

    fn rrdcached_usable(&mut self) -> bool {
        match self.rrdcached_down_until {
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                self.rrdcached_down_until = None;
                true
            }
            None => true,
        }
    }
}

/// Creates the file (and its directories, 0750) if missing; `true` if it did.
fn ensure_file(path: &Path, update: &Update) -> Result<bool, String> {
    if path.exists() {
        return Ok(false);
    }
    if let Some(parent) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(parent)
            .map_err(|error| error.to_string())?;
    }
    match schema::create(path, update.kind) {
        Ok(()) => Ok(true),
        // Created meanwhile by someone else (rrdcached's CREATE, an admin).
        Err(_) if path.exists() => Ok(false),
        Err(error) => Err(error.to_string()),
    }
}

fn write_direct(path: &Path, update: &Update) -> Result<(), String> {
    let mut fields = update.values.split(':');
    let time = match fields.next() {
        Some("N") => BatchTime::Now,
        Some(seconds) => {
            let seconds: u64 = seconds
                .parse()
                .map_err(|_| format!("bad timestamp {seconds:?}"))?;
            BatchTime::Timestamp(UNIX_EPOCH + Duration::from_secs(seconds))
        }
        None => return Err("no timestamp".into()),
    };
    let data = fields
        .map(|field| {
            if field == "U" {
                Ok(Datum::Unspecified)
            } else if let Ok(int) = field.parse::<u64>() {
                Ok(Datum::Int(int))
            } else {
                field
                    .parse::<f64>()
                    .map(Datum::Float)
                    .map_err(|_| format!("bad value {field:?}"))
            }
        })
        .collect::<Result<Vec<Datum>, String>>()?;
    update::update_all(path, update::Options::default(), &[(time, data)])
        .map_err(|error| error.to_string())
}

/// Seconds since the epoch (for tests and benchmarks building values).
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn storage_value(time: u64, used: u64) -> Vec<u8> {
        format!("{time}:1000:{used}\0").into_bytes()
    }

    #[test]
    fn direct_writes_create_and_update_the_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let writer = Writer::spawn(WriterConfig::new(dir.path().to_owned(), None)).expect("writer");
        let now = now_secs();
        writer.submit(b"pve2-storage/node1/local", &storage_value(now - 60, 10));
        writer.submit(b"pve2-storage/node1/local", &storage_value(now, 20));
        writer.submit(b"unknown/key", b"1:2\0");
        wait_until("two writes", || {
            let stats = writer.stats();
            stats.direct == 2 && stats.ignored == 1
        });
        let path = dir.path().join("pve-storage-9.0/node1/local");
        let info = rrd::ops::info::info(&path).expect("info");
        assert_eq!(
            info.get("last_update")
                .cloned()
                .and_then(|v| v.into_count()),
            Some(now)
        );
        let mode = std::fs::metadata(path.parent().expect("dir")).expect("dir");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o750);
        assert_eq!(writer.stats().created, 1);
        assert!(writer.stop(Duration::from_secs(1)));
    }

    /// rrdcached accepts and never answers: every update still reaches
    /// its file (directly, after one timeout), submit never waits, the
    /// queue stays bounded and the stop is prompt.
    #[test]
    fn a_hung_rrdcached_costs_one_timeout_and_nothing_else() {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("hung.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let held = std::thread::spawn(move || {
            let mut connections = Vec::new();
            while let Ok((stream, _)) = listener.accept() {
                connections.push(stream);
                if connections.len() > 4 {
                    break;
                }
            }
        });
        let mut config = WriterConfig::new(dir.path().join("db"), Some(socket.clone()));
        config.timeout = Duration::from_millis(200);
        config.queue_max = 100;
        let writer = Writer::spawn(config).expect("writer");
        let now = now_secs();
        let mut slowest = Duration::ZERO;
        for i in 0..1000u64 {
            let start = Instant::now();
            writer.submit(
                format!("pve2-storage/node1/s{}", i % 10).as_bytes(),
                &storage_value(now, i),
            );
            slowest = slowest.max(start.elapsed());
            assert!(writer.pending() <= 100);
        }
        assert!(
            slowest < Duration::from_millis(50),
            "submit took {slowest:?}"
        );
        wait_until("the queue drained", || writer.pending() == 0);
        let stats = writer.stats();
        assert_eq!(stats.through_rrdcached, 0, "{stats:?}");
        assert_eq!(
            stats.direct + stats.failed + stats.dropped,
            1000,
            "every update accounted for: {stats:?}"
        );
        assert!(
            stats.dropped > 0,
            "1,000 updates at once overflow 100: {stats:?}"
        );
        assert!(stats.direct >= 10, "{stats:?}");
        let start = Instant::now();
        assert!(writer.stop(Duration::from_secs(2)));
        assert!(start.elapsed() < Duration::from_secs(1));
        drop(writer);
        // Let the fake rrdcached go.
        let _ = std::os::unix::net::UnixStream::connect(&socket);
        for _ in 0..5 {
            let _ = std::os::unix::net::UnixStream::connect(&socket);
        }
        let _ = held.join();
    }
}
