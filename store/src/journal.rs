//! The journal: an append-only file of applied operations since the last
//! LMDB checkpoint. It is what makes an acknowledged change durable between
//! checkpoints while writing few bytes per change (ARCHITECTURE.md,
//! "Durability").
//!
//! Record layout (little-endian):
//! ```text
//! 0   u32  magic "PJR1"
//! 4   u32  payload length
//! 8   u64  sequence number (strictly increasing, never reused)
//! 16  u32  crc32c over bytes 4..16 and the payload
//! 20  u32  reserved (0)
//! 24  ...  payload: one encoded `Op` (see `op.rs`)
//! ```
//! A torn or damaged tail (short record, bad magic, bad CRC) ends the replay;
//! the file is cut back to the last good record before new records follow.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use bytemuck::{Pod, Zeroable};

use crate::error::{Result, StoreError};

const MAGIC: u32 = u32::from_le_bytes(*b"PJR1");
/// No record is larger: an op carries at most 1 MiB of data plus two paths.
pub const RECORD_PAYLOAD_MAX: usize = 1024 * 1024 + 16 * 1024;

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct RecordHeader {
    magic: u32,
    payload_len: u32,
    seq: u64,
    crc: u32,
    reserved: u32,
}
pub(crate) const HEADER_SIZE: usize = size_of::<RecordHeader>();
const _: () = assert!(HEADER_SIZE == 24);

fn record_crc(header: &RecordHeader, payload: &[u8]) -> u32 {
    let mut covered = [0u8; 12];
    covered[0..4].copy_from_slice(&header.payload_len.to_le_bytes());
    covered[4..12].copy_from_slice(&header.seq.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&covered), payload)
}

/// Appends one record to `out` from a payload of its own (tests; the
/// daemon encodes in place, [`encode_record_in_place`]).
#[cfg(test)]
pub fn encode_record(out: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    assert!(
        payload.len() <= RECORD_PAYLOAD_MAX,
        "journal record too large"
    );
    encode_any_size(out, seq, payload);
}

/// Appends one record of `payload_len` bytes to `out`, whose payload `fill`
/// appends to `out` itself: the payload is written once, straight into the
/// batch (a 1 MiB write is not copied through a buffer of its own first).
/// Panics, leaving `out` as it was, if `payload_len` is over the record
/// limit or `fill` wrote another length (the caller's encoder is wrong).
pub fn encode_record_in_place(
    out: &mut Vec<u8>,
    seq: u64,
    payload_len: usize,
    fill: impl FnOnce(&mut Vec<u8>),
) {
    assert!(
        payload_len <= RECORD_PAYLOAD_MAX,
        "journal record too large"
    );
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_SIZE]);
    fill(out);
    let written = out.len() - start - HEADER_SIZE;
    if written != payload_len {
        out.truncate(start);
        panic!("journal record of {written} bytes, announced {payload_len}");
    }
    let mut header = RecordHeader {
        magic: MAGIC,
        payload_len: payload_len as u32,
        seq,
        crc: 0,
        reserved: 0,
    };
    header.crc = record_crc(&header, &out[start + HEADER_SIZE..]);
    out[start..start + HEADER_SIZE].copy_from_slice(bytemuck::bytes_of(&header));
}

/// `encode_record` without the size check (tests build over-size records).
#[cfg(test)]
fn encode_any_size(out: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    let mut header = RecordHeader {
        magic: MAGIC,
        payload_len: payload.len() as u32,
        seq,
        crc: 0,
        reserved: 0,
    };
    header.crc = record_crc(&header, payload);
    out.extend_from_slice(bytemuck::bytes_of(&header));
    out.extend_from_slice(payload);
}

/// One record found by `Journal::replay`.
pub struct Record {
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// What the replay found.
pub struct Replay {
    pub records: Vec<Record>,
    /// Bytes after the last good record (a torn or damaged tail), now cut off.
    pub dropped_bytes: u64,
}

pub struct Journal {
    file: File,
    path: PathBuf,
    /// Bytes in the file (all of them good records).
    len: u64,
    /// True when appended bytes may not be on stable storage yet.
    unsynced: bool,
    /// Incremented by every `reset`: a background sync of an older epoch
    /// says nothing about the current file contents.
    epoch: u64,
    /// A `SyncJob` is out.
    sync_in_flight: bool,
    /// Told when the journal goes from synced to unsynced.
    signal: std::sync::Arc<SyncSignal>,
}

/// Wakes a background syncer when the journal has unsynced bytes (after it
/// was synced): appends from any thread reach it without a timer.
#[derive(Default)]
pub struct SyncSignal {
    /// (unsynced bytes appeared, closed)
    state: std::sync::Mutex<(bool, bool)>,
    ready: std::sync::Condvar,
}

impl SyncSignal {
    fn lock(&self) -> std::sync::MutexGuard<'_, (bool, bool)> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn mark(&self) {
        let mut state = self.lock();
        if !state.0 {
            state.0 = true;
            self.ready.notify_one();
        }
    }

    /// Blocks until the journal went unsynced since the last call; `false`
    /// once closed.
    pub fn wait(&self) -> bool {
        let mut state = self.lock();
        while !state.0 && !state.1 {
            state = self
                .ready
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        state.0 = false;
        !state.1
    }

    /// Ends the waiting (shutdown).
    pub fn close(&self) {
        self.lock().1 = true;
        self.ready.notify_all();
    }
}

/// An `fdatasync` of the journal to run on another thread (a slow disk
/// must not hold up the thread that serves requests): a duplicate of the
/// journal's fd and what the journal held when the job was made. Hand the
/// job back with its result to [`Journal::sync_done`].
pub struct SyncJob {
    file: File,
    len: u64,
    epoch: u64,
}

impl SyncJob {
    /// `fdatasync`; may take as long as the disk wants.
    pub fn run(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

impl Journal {
    /// Opens (or creates) the journal, reads every good record and cuts off
    /// a damaged tail.
    pub fn open(path: &Path) -> Result<(Journal, Replay)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|error| StoreError::io(path, error))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|error| StoreError::io(path, error))?;
        let (records, good_len) = parse_records(&bytes);
        let dropped_bytes = (bytes.len() - good_len) as u64;
        if dropped_bytes > 0 {
            tracing::warn!(
                path = %path.display(),
                good_bytes = good_len,
                dropped_bytes,
                "journal has a torn or damaged tail; cutting it off"
            );
            file.set_len(good_len as u64)
                .map_err(|error| StoreError::io(path, error))?;
            file.sync_data()
                .map_err(|error| StoreError::io(path, error))?;
        }
        file.seek(SeekFrom::End(0))
            .map_err(|error| StoreError::io(path, error))?;
        let journal = Journal {
            file,
            path: path.to_path_buf(),
            len: good_len as u64,
            unsynced: false,
            epoch: 0,
            sync_in_flight: false,
            signal: std::sync::Arc::new(SyncSignal::default()),
        };
        Ok((
            journal,
            Replay {
                records,
                dropped_bytes,
            },
        ))
    }

    pub fn len_bytes(&self) -> u64 {
        self.len
    }

    /// Writes a batch of encoded records with one `write` (whole or error).
    /// After it returns the records survive a crash of this process.
    pub fn append(&mut self, batch: &[u8]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.file.write_all(batch) {
            // All or nothing: cut a partly written batch off again, so that
            // what is durable is exactly what was acknowledged.
            let cut = self
                .file
                .set_len(self.len)
                .and_then(|()| self.file.seek(SeekFrom::Start(self.len)).map(|_| ()));
            if let Err(cut_error) = cut {
                tracing::error!(%cut_error, "cannot cut a partly written journal batch");
            }
            return Err(StoreError::io(&self.path, error));
        }
        self.len += batch.len() as u64;
        if !self.unsynced {
            self.signal.mark();
        }
        self.unsynced = true;
        Ok(())
    }

    /// `fdatasync` if anything was appended since the last sync. After it
    /// returns the records survive a power loss.
    pub fn sync(&mut self) -> Result<()> {
        if self.unsynced {
            self.file
                .sync_data()
                .map_err(|error| StoreError::io(&self.path, error))?;
            self.unsynced = false;
        }
        Ok(())
    }

    pub fn is_synced(&self) -> bool {
        !self.unsynced
    }

    /// Checks that the file system takes `bytes` more at the end of the
    /// journal (allocates them, then gives them back).
    pub fn probe_space(&mut self, bytes: u64) -> Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: fallocate on our own open fd, within i64 range.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                0,
                self.len as libc::off_t,
                bytes as libc::off_t,
            )
        };
        let probed = if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        };
        self.file
            .set_len(self.len)
            .map_err(|error| StoreError::io(&self.path, error))?;
        probed.map_err(|error| StoreError::io(&self.path, error))
    }

    /// Takes over the sync bookkeeping of the journal this one replaces (a
    /// reopen after a failure): the same signal for the syncer, a new epoch
    /// so that a sync job of the old file says nothing about this one.
    pub fn follow(&mut self, old: &Journal) {
        self.signal = std::sync::Arc::clone(&old.signal);
        self.epoch = old.epoch + 1;
    }

    /// What a background syncer waits on.
    pub fn sync_signal(&self) -> std::sync::Arc<SyncSignal> {
        std::sync::Arc::clone(&self.signal)
    }

    /// A background sync of what was appended so far; `None` when nothing
    /// is unsynced or a job is already out.
    pub fn sync_job(&mut self) -> Result<Option<SyncJob>> {
        if !self.unsynced || self.sync_in_flight {
            return Ok(None);
        }
        let file = self
            .file
            .try_clone()
            .map_err(|error| StoreError::io(&self.path, error))?;
        self.sync_in_flight = true;
        Ok(Some(SyncJob {
            file,
            len: self.len,
            epoch: self.epoch,
        }))
    }

    /// The job's outcome: on success the bytes it covered are durable (the
    /// journal counts as synced if nothing was appended or reset since).
    pub fn sync_done(&mut self, job: SyncJob, result: std::io::Result<()>) -> Result<()> {
        self.sync_in_flight = false;
        result.map_err(|error| StoreError::io(&self.path, error))?;
        if job.epoch == self.epoch && job.len == self.len {
            self.unsynced = false;
        }
        Ok(())
    }

    /// Empties the journal after a checkpoint made its records redundant.
    /// Not synced: stale records left by a lost truncate are skipped on
    /// replay by their sequence numbers.
    pub fn reset(&mut self) -> Result<()> {
        self.epoch += 1;
        self.file
            .set_len(0)
            .map_err(|error| StoreError::io(&self.path, error))?;
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(|error| StoreError::io(&self.path, error))?;
        self.len = 0;
        self.unsynced = false;
        Ok(())
    }
}

/// `parse_records` for the fuzz targets: the number of good records.
pub(crate) fn parse_for_fuzzing(bytes: &[u8]) -> usize {
    let (records, good) = parse_records(bytes);
    assert!(good <= bytes.len());
    records.len()
}

/// Reads the good records of a journal file without changing it.
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    let bytes = std::fs::read(path).map_err(|error| StoreError::io(path, error))?;
    Ok(parse_records(&bytes).0)
}

/// Parses records from the start of `bytes`; returns them and the length of
/// the good prefix. Never panics on damaged input.
fn parse_records(bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut position = 0usize;
    let mut last_seq = 0u64;
    while let Some(header_bytes) = bytes.get(position..position + HEADER_SIZE) {
        let header: RecordHeader = bytemuck::pod_read_unaligned(header_bytes);
        let payload_len = header.payload_len as usize;
        if header.magic != MAGIC
            || header.reserved != 0
            || payload_len > RECORD_PAYLOAD_MAX
            || header.seq <= last_seq
        {
            break;
        }
        let start = position + HEADER_SIZE;
        let Some(payload) = bytes.get(start..start + payload_len) else {
            break;
        };
        if record_crc(&header, payload) != header.crc {
            break;
        }
        records.push(Record {
            seq: header.seq,
            payload: payload.to_vec(),
        });
        last_seq = header.seq;
        position = start + payload_len;
    }
    (records, position)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(records: &[(u64, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (seq, payload) in records {
            encode_record(&mut out, *seq, payload);
        }
        out
    }

    #[test]
    fn every_cut_of_the_file_replays_a_prefix() {
        let bytes = batch(&[(1, b"first"), (2, b""), (3, b"third record")]);
        let boundaries = [0, 24 + 5, 24 + 5 + 24, bytes.len()];
        for cut in 0..=bytes.len() {
            let (records, good) = parse_records(&bytes[..cut]);
            let expected = boundaries.iter().filter(|b| **b <= cut && **b > 0).count();
            assert_eq!(records.len(), expected, "cut {cut}");
            assert_eq!(good, boundaries[expected], "cut {cut}");
        }
    }

    #[test]
    fn a_flipped_bit_ends_the_replay_there() {
        let bytes = batch(&[(1, b"first"), (2, b"second"), (3, b"third")]);
        for position in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[position] ^= 1 << bit;
                let (records, _) = parse_records(&damaged);
                let record_index = if position < 29 {
                    0
                } else if position < 59 {
                    1
                } else {
                    2
                };
                // Records before the damaged one survive intact; the damaged one
                // and everything after it are dropped.
                assert!(records.len() <= record_index, "pos {position} bit {bit}");
                for record in &records {
                    assert!(record.seq as usize <= record_index);
                }
            }
        }
    }

    #[test]
    fn sequence_numbers_must_increase() {
        let bytes = batch(&[(5, b"a"), (5, b"b")]);
        let (records, _) = parse_records(&bytes);
        assert_eq!(records.len(), 1);
    }

    #[test]
    fn a_record_encoded_in_place_is_the_same_bytes() {
        let mut copied = b"earlier".to_vec();
        encode_record(&mut copied, 9, b"some payload");
        let mut in_place = b"earlier".to_vec();
        encode_record_in_place(&mut in_place, 9, 12, |out| {
            out.extend_from_slice(b"some payload")
        });
        assert_eq!(copied, in_place);
        // A wrong length leaves the batch as it was.
        let mut batch = b"earlier".to_vec();
        let wrong = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            encode_record_in_place(&mut batch, 10, 3, |out| out.extend_from_slice(b"four"))
        }));
        assert!(wrong.is_err());
        assert_eq!(batch, b"earlier");
    }

    #[test]
    fn append_reopen_and_reset() {
        let dir = tempdir();
        let path = dir.join("journal");
        {
            let (mut journal, replay) = Journal::open(&path).expect("open");
            assert!(replay.records.is_empty());
            journal
                .append(&batch(&[(1, b"one"), (2, b"two")]))
                .expect("append");
            journal.sync().expect("sync");
        }
        // A torn third record is dropped and cut off.
        let mut torn = std::fs::read(&path).expect("read");
        torn.extend_from_slice(&batch(&[(3, b"three")])[..10]);
        std::fs::write(&path, &torn).expect("write");
        let (mut journal, replay) = Journal::open(&path).expect("reopen");
        assert_eq!(replay.records.len(), 2);
        assert_eq!(replay.dropped_bytes, 10);
        assert_eq!(
            std::fs::metadata(&path).expect("stat").len(),
            journal.len_bytes()
        );
        journal.reset().expect("reset");
        let (_, replay) = Journal::open(&path).expect("reopen");
        assert!(replay.records.is_empty());
        std::fs::remove_dir_all(dir).ok();
    }

    /// A well-formed record of any size (`encode_record` refuses too large).
    fn raw_record(seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_any_size(&mut out, seq, payload);
        out
    }

    #[test]
    fn the_largest_record_is_accepted_and_one_byte_more_is_not() {
        let max = vec![7u8; RECORD_PAYLOAD_MAX];
        let bytes = batch(&[(1, &max)]);
        assert_eq!(bytes, raw_record(1, &max));
        let (records, good) = parse_records(&bytes);
        assert_eq!((records.len(), good), (1, bytes.len()));
        let over = raw_record(1, &vec![7u8; RECORD_PAYLOAD_MAX + 1]);
        let (records, good) = parse_records(&over);
        assert_eq!((records.len(), good), (0, 0));
    }

    /// Background syncs: the signal wakes the syncer when the journal goes
    /// unsynced; a job covers what was appended when it was made, not what
    /// came after it or a reset; a failed job is an error.
    #[test]
    fn background_sync_jobs_and_the_signal() {
        let dir = tempdir();
        let path = dir.join("journal");
        let (mut journal, _) = Journal::open(&path).expect("open");
        let signal = journal.sync_signal();
        assert!(
            journal.sync_job().expect("job").is_none(),
            "nothing to sync"
        );
        journal.append(&batch(&[(1, b"one")])).expect("append");
        assert!(signal.wait(), "the append woke the syncer");
        let job = journal.sync_job().expect("job").expect("a job");
        assert!(
            journal.sync_job().expect("job").is_none(),
            "one job at a time"
        );
        journal.append(&batch(&[(2, b"two")])).expect("append");
        let result = job.run();
        journal.sync_done(job, result).expect("done");
        assert!(!journal.is_synced(), "the second record is not covered");
        let job = journal.sync_job().expect("job").expect("another job");
        let result = job.run();
        journal.sync_done(job, result).expect("done");
        assert!(journal.is_synced());
        journal.append(&batch(&[(3, b"three")])).expect("append");
        assert!(signal.wait(), "synced, then unsynced again: woken again");
        // A job made before a reset says nothing about the file after it,
        // even at the same length.
        let job = journal.sync_job().expect("job").expect("job");
        journal.reset().expect("reset");
        assert!(
            journal.is_synced(),
            "a reset makes the old records redundant"
        );
        let before = journal.len_bytes();
        journal
            .append(&batch(&[(4, b"one"), (5, b"two"), (6, b"three")]))
            .expect("append");
        assert!(journal.len_bytes() > before);
        journal.sync_done(job, Ok(())).expect("done");
        assert!(!journal.is_synced(), "a job of the file before the reset");
        let job = journal.sync_job().expect("job").expect("job");
        assert!(
            journal
                .sync_done(job, Err(std::io::Error::other("disk")))
                .is_err()
        );
        signal.close();
        assert!(!signal.wait(), "closed");
        std::fs::remove_dir_all(dir).ok();
    }

    /// The syncer sleeps until the journal goes unsynced (or shutdown):
    /// `wait` does not return before a mark.
    #[test]
    fn the_signal_blocks_until_marked_or_closed() {
        let signal = std::sync::Arc::new(SyncSignal::default());
        let (done, returned) = std::sync::mpsc::channel();
        let waiter = std::sync::Arc::clone(&signal);
        let thread = std::thread::spawn(move || {
            for _ in 0..2 {
                let _ = done.send(waiter.wait());
            }
        });
        let pause = std::time::Duration::from_millis(100);
        assert!(returned.recv_timeout(pause).is_err(), "nothing marked yet");
        signal.mark();
        assert_eq!(returned.recv_timeout(pause * 50), Ok(true), "marked");
        assert!(returned.recv_timeout(pause).is_err(), "the mark was taken");
        signal.close();
        assert_eq!(returned.recv_timeout(pause * 50), Ok(false), "closed");
        thread.join().expect("waiter");
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "pmxcfs-journal-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }
}

#[cfg(test)]
mod arbitrary_bytes {
    use proptest::prelude::*;

    proptest! {
        /// Damaged journals never panic the replay, and what it accepts is a
        /// prefix of the file.
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let (records, good) = super::parse_records(&bytes);
            prop_assert!(good <= bytes.len());
            prop_assert!(records.windows(2).all(|pair| pair[0].seq < pair[1].seq));
        }
    }
}
