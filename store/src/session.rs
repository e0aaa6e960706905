//! The one writer of a store: an open LMDB write transaction, the journal
//! that makes its changes durable, and the derived in-memory tables (vmlist,
//! lock table).
//!
//! Changes go into the open write transaction (so reads on this thread see
//! them at once) and, as encoded ops, into the journal. `commit` makes a
//! batch durable in the journal; `checkpoint` commits the LMDB transaction
//! (fsync) and empties the journal. Crash recovery replays the journal
//! records newer than the checkpoint (ARCHITECTURE.md, "Durability").

use std::time::{SystemTime, UNIX_EPOCH};

use heed::RwTxn;

use crate::entry::{Kind, MAX_FILE_SIZE, Meta, ROOT_INODE, encode_value, flags};
use crate::error::{Result, StoreError};
use crate::journal::{self, Journal, SyncJob};
use crate::locks::LockTable;
use crate::op::{self, Op, Origin};
use crate::path::{self, GuestConfig};
use crate::row::Row;
use crate::store::{Reader, Store, dirent_key, inode_key};
use crate::vmlist::VmList;

/// When an acknowledged change reaches stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// `commit` writes the journal and `fdatasync`s it: an acknowledged
    /// change survives a power loss.
    Strict,
    /// `commit` writes the journal (an acknowledged change survives a crash
    /// of the daemon); the owner calls `sync` on a timer, which bounds what
    /// a power loss can take.
    Relaxed,
}

/// Checkpoint thresholds: the journal never grows past these before the
/// next `commit` folds it into LMDB.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointLimits {
    pub records_max: u64,
    pub journal_bytes_max: u64,
}

impl Default for CheckpointLimits {
    fn default() -> Self {
        CheckpointLimits {
            records_max: 8192,
            journal_bytes_max: 32 << 20,
        }
    }
}

/// Proof of being the apply path. Exactly one exists per session; it is
/// neither `Clone` nor constructible outside this crate, so only the code
/// that received it from `Store::session` can obtain a `Writer`.
pub struct ApplyPermit {
    _private: (),
}

/// The write side's state, for status reports.
#[derive(Clone, Debug, Default)]
pub struct SessionStats {
    pub journal_bytes: u64,
    pub records_since_checkpoint: u64,
    /// Journal writes (commits that had records) since the session began.
    pub journal_writes: u64,
    /// Wall-clock second of the last checkpoint this session made.
    pub last_checkpoint: Option<u64>,
    pub poisoned: bool,
    /// Lock directories the lock table knows, with the second each expires.
    pub locks: Vec<(Vec<u8>, u64)>,
}

/// What recovery found when the session started.
#[derive(Clone, Debug, Default)]
pub struct Recovery {
    pub replayed_records: u64,
    pub dropped_journal_bytes: u64,
}

type Clock = Box<dyn Fn() -> u64 + Send>;

/// Returns the allocator's free memory to the system: glibc keeps freed
/// blocks in its heap otherwise (after a resync of a 100 MiB tree, the
/// leader's rows and LMDB's dirty pages stayed resident, free). For the
/// callers that just freed much: a resync, a dispatch of large messages.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks glibc's own heap under its lock.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The journal batch's buffer keeps at most this much room between commits
/// (the largest record, a 1 MiB write, fits).
const BATCH_KEPT_BYTES: usize = 2 << 20;

/// Begins the next write transaction after a commit or an abort. It only
/// fails if LMDB itself is broken (its lock or memory); there is no state to
/// serve from without one, so the process stops at once — crash-only: every
/// acknowledged change is in the journal or the last checkpoint, and a
/// restart replays it.
fn begin_or_die(store: &Store) -> RwTxn<'_> {
    match store.env.write_txn() {
        Ok(txn) => txn,
        Err(error) => {
            tracing::error!(%error, "cannot begin an LMDB write transaction; stopping");
            eprintln!("pmxcfs: cannot begin an LMDB write transaction: {error}");
            std::process::abort();
        }
    }
}

fn wall_clock_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

pub struct Session<'s> {
    store: &'s Store,
    txn: Option<RwTxn<'s>>,
    journal: Journal,
    /// Encoded journal records applied but not yet handed to `journal`.
    batch: Vec<u8>,
    next_seq: u64,
    records_since_checkpoint: u64,
    journal_writes: u64,
    durability: Durability,
    limits: CheckpointLimits,
    vmlist: VmList,
    locks: LockTable,
    /// Set when a write to disk failed: from then on every change is refused
    /// with EIO (the C daemon's memdb "errors" flag) until `recover`.
    poisoned: bool,
    /// The errno of the failure that set `poisoned`.
    poison_errno: i32,
    /// True while journal records are replayed: they are already in the
    /// journal, and they passed the vmid checks when they were first applied.
    replaying: bool,
    clock: Clock,
    recovery: Recovery,
    last_checkpoint: Option<u64>,
}

impl Store {
    /// Starts the writer: replays the journal, rebuilds the vmlist and the
    /// lock table. Fails if the tree holds a vmid twice (the C daemon then
    /// refuses to start, too).
    pub fn session(&self, durability: Durability) -> Result<(Session<'_>, ApplyPermit)> {
        let (journal, replay) = Journal::open(&self.journal_path())?;
        let txn = self.env.write_txn()?;
        let checkpoint_seq = self.journal_seq(&txn)?;
        let mut session = Session {
            store: self,
            txn: Some(txn),
            journal,
            batch: Vec::new(),
            next_seq: checkpoint_seq + 1,
            records_since_checkpoint: 0,
            journal_writes: 0,
            durability,
            limits: CheckpointLimits::default(),
            vmlist: VmList::default(),
            locks: LockTable::default(),
            poisoned: false,
            poison_errno: 0,
            replaying: true,
            clock: Box::new(wall_clock_secs),
            recovery: Recovery {
                replayed_records: 0,
                dropped_journal_bytes: replay.dropped_bytes,
            },
            last_checkpoint: None,
        };
        session.rebuild_derived()?;
        session.replay(replay.records, checkpoint_seq)?;
        session.replaying = false;
        if session.recovery.replayed_records > 0 {
            // As the C daemon after loading its database: the guest index and
            // the lock table come from the tree, not from the replayed history.
            session.rebuild_derived()?;
            tracing::info!(
                records = session.recovery.replayed_records,
                "replayed the journal after an unclean stop"
            );
        }
        Ok((session, ApplyPermit { _private: () }))
    }
}

impl<'s> Session<'s> {
    fn txn(&self) -> &RwTxn<'s> {
        self.txn
            .as_ref()
            .expect("the write transaction is open between calls")
    }

    fn txn_mut(&mut self) -> &mut RwTxn<'s> {
        self.txn
            .as_mut()
            .expect("the write transaction is open between calls")
    }

    /// Reads of the current state, including changes not yet checkpointed.
    pub fn reader(&self) -> Reader<'_> {
        Reader {
            txn: self.txn(),
            dbs: &self.store.dbs,
        }
    }

    /// Write access, for the holder of the apply permit only.
    pub fn writer(&mut self, _permit: &mut ApplyPermit) -> Writer<'_, 's> {
        Writer { session: self }
    }

    pub fn vmlist(&self) -> &VmList {
        &self.vmlist
    }

    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The errno of the disk failure that poisoned the session (ENOSPC for
    /// a full disk), EIO otherwise; `None` while it is healthy.
    pub fn poison_errno(&self) -> Option<i32> {
        self.poisoned.then_some(self.poison_errno)
    }

    fn poison(&mut self, error: &StoreError) {
        self.poisoned = true;
        self.poison_errno = match error {
            StoreError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            StoreError::Db(heed::Error::Io(source)) => source.raw_os_error().unwrap_or(libc::EIO),
            StoreError::Db(heed::Error::Mdb(heed::MdbError::MapFull)) => libc::ENOSPC,
            _ => libc::EIO,
        };
    }

    /// After a failed write to disk (a full disk, say): reopens the journal
    /// (a torn tail is cut off), checks that the disk takes 64 KiB again,
    /// rebuilds the view from what is durable and accepts changes again.
    /// Everything acknowledged is kept (it was durable before the failure);
    /// what failed was answered with an error. Err (and still poisoned)
    /// while the disk refuses.
    pub fn recover(&mut self) -> Result<()> {
        if !self.poisoned {
            return Ok(());
        }
        let (mut journal, _replay) = Journal::open(&self.store.journal_path())?;
        journal.probe_space(64 << 10)?;
        journal.follow(&self.journal);
        self.journal = journal;
        self.reload_durable_view()?;
        self.poisoned = false;
        tracing::info!("the store takes writes again");
        Ok(())
    }

    /// Replaces the clock of the lock table (seconds); for tests.
    pub fn set_clock(&mut self, clock: impl Fn() -> u64 + Send + 'static) {
        self.clock = Box::new(clock);
    }

    /// Replaces the 120 s lock lifetime (tests).
    pub fn set_lock_timeout_secs(&mut self, timeout_secs: u64) {
        self.locks.set_timeout_secs(timeout_secs);
    }

    pub fn set_checkpoint_limits(&mut self, limits: CheckpointLimits) {
        self.limits = limits;
    }

    /// Makes every change applied so far durable according to the session's
    /// `Durability`; a caller acknowledges changes only after this returned
    /// Ok. Folds the journal into LMDB when it passed its limits.
    pub fn commit(&mut self) -> Result<()> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        let batch = std::mem::take(&mut self.batch);
        let had_records = !batch.is_empty();
        let appended = self
            .journal
            .append(&batch)
            .and_then(|()| match self.durability {
                Durability::Strict => self.journal.sync(),
                Durability::Relaxed => Ok(()),
            });
        self.batch = batch;
        self.batch.clear();
        // A commit of many large writes (a CPG dispatch of them) leaves no
        // more than this behind.
        self.batch.shrink_to(BATCH_KEPT_BYTES);
        if let Err(error) = appended {
            tracing::error!(%error, "journal write failed; refusing further changes");
            self.poison(&error);
            // The batch was applied but is not durable: take it back out of
            // view (the caller answers EIO for it).
            if let Err(reload) = self.reload_durable_view() {
                tracing::error!(%reload, "cannot rebuild the durable view");
            }
            return Err(error);
        }
        self.journal_writes += u64::from(had_records);
        if self.records_since_checkpoint >= self.limits.records_max
            || self.journal.len_bytes() >= self.limits.journal_bytes_max
        {
            // The batch is in the journal: acknowledged even if folding it
            // into LMDB fails (the session is then poisoned for new changes).
            if let Err(error) = self.checkpoint() {
                tracing::error!(%error, "automatic checkpoint failed");
            }
        }
        Ok(())
    }

    /// `fdatasync`s the journal (the timer of `Durability::Relaxed`).
    pub fn sync(&mut self) -> Result<()> {
        self.journal.sync().inspect_err(|error| self.poison(error))
    }

    pub fn is_synced(&self) -> bool {
        self.batch.is_empty() && self.journal.is_synced()
    }

    /// Wakes a background syncer when changes wait to be synced.
    pub fn sync_signal(&self) -> std::sync::Arc<journal::SyncSignal> {
        self.journal.sync_signal()
    }

    /// A background `fdatasync` of the journal (the relaxed-mode timer runs
    /// it off the serving thread); `None` if there is nothing to sync, a job
    /// is out, or the session is poisoned.
    pub fn sync_job(&mut self) -> Option<SyncJob> {
        if self.poisoned {
            return None;
        }
        match self.journal.sync_job() {
            Ok(job) => job,
            Err(error) => {
                tracing::error!(%error, "cannot start a journal sync");
                None
            }
        }
    }

    /// The outcome of a [`Session::sync_job`]; an error poisons the session
    /// (as a failed foreground sync does).
    pub fn sync_done(&mut self, job: SyncJob, result: std::io::Result<()>) -> Result<()> {
        self.journal
            .sync_done(job, result)
            .inspect_err(|error| self.poison(error))
    }

    /// Rebuilds the open transaction as exactly what is durable: the last
    /// checkpoint plus the good journal records. Used when a disk write
    /// failed, so that readers never see a change that was not acknowledged
    /// and never lose one that was.
    fn reload_durable_view(&mut self) -> Result<()> {
        self.batch.clear();
        drop(self.txn.take());
        self.txn = Some(begin_or_die(self.store));
        let checkpoint_seq = self.store.journal_seq(self.txn())?;
        let records = journal::read_records(&self.store.journal_path())?;
        self.next_seq = checkpoint_seq + 1;
        self.records_since_checkpoint = 0;
        self.recovery.replayed_records = 0;
        self.replay(records, checkpoint_seq)?;
        self.rebuild_derived()
    }

    /// Applies journal records newer than `checkpoint_seq` to the open
    /// transaction (start-up, and after a failed checkpoint).
    fn replay(&mut self, records: Vec<journal::Record>, checkpoint_seq: u64) -> Result<()> {
        let path = self.store.journal_path();
        self.replaying = true;
        for record in records {
            if record.seq <= checkpoint_seq {
                continue;
            }
            let (op, origin) = op::decode(&record.payload).ok_or_else(|| StoreError::Journal {
                path: path.clone(),
                reason: format!("record {} does not decode", record.seq),
            })?;
            // Only changes are journaled; the one refusal that changes the tree
            // (the rename quirk) replays as the same refusal.
            match self.apply_op(&op, origin) {
                Ok(_) => {}
                Err(error) if error.is_refusal() => {}
                Err(error) => {
                    return Err(StoreError::Journal {
                        path,
                        reason: format!("record {} does not replay: {error}", record.seq),
                    });
                }
            }
            self.next_seq = record.seq + 1;
            self.records_since_checkpoint += 1;
            self.recovery.replayed_records += 1;
        }
        self.replaying = false;
        Ok(())
    }

    /// Commits the LMDB transaction (durably) and empties the journal.
    pub fn checkpoint(&mut self) -> Result<()> {
        if self.poisoned {
            return Err(StoreError::Poisoned);
        }
        if !self.batch.is_empty() {
            return Err(StoreError::Invalid("checkpoint with uncommitted changes"));
        }
        let last_seq = self.next_seq - 1;
        let store = self.store;
        let mut txn = self
            .txn
            .take()
            .expect("the write transaction is open between calls");
        let result = store
            .put_journal_seq(&mut txn, last_seq)
            .and_then(|()| txn.commit().map_err(StoreError::from));
        // Whatever happened, a new transaction starts from the last commit.
        self.txn = Some(begin_or_die(store));
        if let Err(error) = result {
            tracing::error!(%error, "checkpoint failed; refusing further changes");
            self.poison(&error);
            // The failed commit took the changes since the last checkpoint
            // out of view; they are acknowledged and in the journal: put them
            // back so that readers keep seeing them.
            self.reload_durable_view()?;
            return Err(error);
        }
        self.journal
            .reset()
            .inspect_err(|error| self.poison(error))?;
        // A reader that died inside a transaction (a `pmxcfs dump` killed
        // while copying) would pin old pages until the next start.
        match self.store.env.clear_stale_readers() {
            Ok(0) => {}
            Ok(cleared) => tracing::info!(cleared, "cleared stale LMDB readers"),
            Err(error) => tracing::warn!(%error, "cannot check for stale LMDB readers"),
        }
        self.records_since_checkpoint = 0;
        self.last_checkpoint = Some((self.clock)());
        tracing::debug!(seq = last_seq, "checkpoint");
        // The commit freed LMDB's dirty pages of everything since the last
        // checkpoint (up to 32 MiB of changes): back to the system.
        release_free_memory();
        Ok(())
    }

    /// The journal, the checkpoints and the lock table, for status reports.
    pub fn stats(&self) -> SessionStats {
        SessionStats {
            journal_bytes: self.journal.len_bytes(),
            records_since_checkpoint: self.records_since_checkpoint,
            journal_writes: self.journal_writes,
            last_checkpoint: self.last_checkpoint,
            poisoned: self.poisoned,
            locks: self.locks.expiries(),
        }
    }

    /// Checkpoints and ends the session (clean shutdown).
    pub fn close(mut self) -> Result<()> {
        self.commit()?;
        self.checkpoint()
    }

    /// Drops everything applied since the last checkpoint.
    fn abort_to_checkpoint(&mut self) -> Result<()> {
        self.batch.clear();
        drop(self.txn.take());
        self.txn = Some(begin_or_die(self.store));
        self.rebuild_derived()
    }

    /// The body of `Writer::apply_resync`, inside the open transaction.
    fn replace_tree(&mut self, master_index: &[u8], updates: &[Row]) -> Result<()> {
        let master: Vec<u64> = index_inodes(master_index)?;
        let master_set: std::collections::HashSet<u64> = master.iter().copied().collect();
        // Unlink every entry that goes away or gets a new copy, then link the
        // new copies: a name may move between inodes within one resync.
        let mut unlink = Vec::new();
        {
            let reader = self.reader();
            let mut local = Vec::new();
            reader.for_each_entry(|entry| {
                local.push((entry.meta.inode, entry.meta.parent, entry.name.to_vec()));
                Ok(())
            })?;
            let updated: std::collections::HashSet<u64> =
                updates.iter().map(|row| row.inode).collect();
            for (inode, parent, name) in local {
                if inode == ROOT_INODE {
                    continue;
                }
                let gone = !master_set.contains(&inode);
                if gone || updated.contains(&inode) {
                    unlink.push((inode, parent, name, gone));
                }
            }
        }
        let store = self.store;
        for (inode, parent, name, gone) in &unlink {
            let txn = self.txn_mut();
            store.dbs.children.delete(txn, &dirent_key(*parent, name))?;
            if *gone {
                store.dbs.entries.delete(txn, &inode_key(*inode))?;
            }
        }
        for row in updates {
            if row.inode == ROOT_INODE {
                let meta = Meta {
                    inode: ROOT_INODE,
                    parent: 0,
                    version: row.version,
                    writer: row.writer,
                    mtime: row.mtime,
                    kind: Kind::Dir,
                };
                // The C daemon writes the root row with type 4 on a resync.
                self.put_entry(&meta, flags::VERSION_ROW_DIR, b"", b"")?;
                continue;
            }
            let kind = Kind::from_u8(row.kind).ok_or_else(|| {
                StoreError::Corrupt(format!("update {} has type {}", row.inode, row.kind))
            })?;
            let data = row.data.as_deref().unwrap_or_default();
            if kind == Kind::Dir && !data.is_empty() {
                return Err(StoreError::Corrupt(format!(
                    "update {} is a directory with data",
                    row.inode
                )));
            }
            let meta = Meta {
                inode: row.inode,
                parent: row.parent,
                version: row.version,
                writer: row.writer,
                mtime: row.mtime,
                kind,
            };
            let entry_flags = if row.data.as_ref().is_some_and(Vec::is_empty) {
                flags::EMPTY_BLOB
            } else {
                0
            };
            self.put_entry(&meta, entry_flags, &row.name, data)?;
            let key = dirent_key(row.parent, &row.name);
            let txn = self.txn_mut();
            if store.dbs.children.get(txn, &key)?.is_some() {
                return Err(StoreError::Corrupt(format!(
                    "update {} collides with another entry's name",
                    row.inode
                )));
            }
            store
                .dbs
                .children
                .put(txn, &key, &row.inode.to_le_bytes())?;
        }
        let index = self.reader().index()?;
        if index != master_index {
            return Err(StoreError::Corrupt(
                "the tree after the resync does not have the leader's index".into(),
            ));
        }
        Ok(())
    }

    fn rebuild_derived(&mut self) -> Result<()> {
        let (configs, lock_dirs) = {
            let reader = self.reader();
            (collect_guest_configs(&reader)?, collect_lock_dirs(&reader)?)
        };
        let duplicates = self.vmlist.rebuild(configs);
        if !duplicates.is_empty() {
            return Err(StoreError::Corrupt(format!(
                "the tree holds vmids more than once: {duplicates:?}"
            )));
        }
        let now = (self.clock)();
        self.locks.clear();
        for (lock_path, checksum) in lock_dirs {
            self.locks.reset(&lock_path, checksum, now);
        }
        Ok(())
    }

    // ---- the apply path -------------------------------------------------

    /// Applies one op. A refusal (`is_refusal`) normally changes nothing;
    /// the one C quirk that changes state and still fails (rename of a
    /// non-empty directory onto an existing target) is journaled too, so
    /// that a replay reproduces it.
    fn apply_op(&mut self, op: &Op<'_>, origin: Origin) -> Result<u32> {
        if self.poisoned && !self.replaying {
            return Err(StoreError::Poisoned);
        }
        // Refused before it changes anything: its record would not fit the
        // journal (a 1 MiB write fits with paths of up to ~16 KiB).
        let payload_len = op::encoded_len(op);
        if payload_len > journal::RECORD_PAYLOAD_MAX {
            return Err(StoreError::PathTooLong);
        }
        let mut changed = false;
        let result = self.execute(op, origin, &mut changed);
        if let Err(error) = &result
            && !error.is_refusal()
        {
            tracing::error!(%error, "apply failed; refusing further changes");
            self.poison(error);
            return result;
        }
        if changed && !self.replaying {
            // Encoded straight into the batch, sized once: a write's data
            // is copied once, not through a buffer of its own.
            self.batch.reserve(journal::HEADER_SIZE + payload_len);
            journal::encode_record_in_place(&mut self.batch, self.next_seq, payload_len, |out| {
                op::encode(out, op, origin)
            });
            self.next_seq += 1;
            self.records_since_checkpoint += 1;
        }
        result
    }

    fn execute(&mut self, op: &Op<'_>, origin: Origin, changed: &mut bool) -> Result<u32> {
        match *op {
            Op::Create { path } => self.write(path, 0, &[], false, true, origin, changed),
            Op::Write {
                path,
                offset,
                data,
                truncate,
            } => self.write(path, offset, data, truncate, false, origin, changed),
            Op::Mkdir { path } => self.mkdir(path, origin, changed),
            Op::Delete { path } => self.delete(path, origin, changed),
            Op::Rename { from, to } => self.rename(from, to, origin, changed),
            Op::Mtime { path, mtime } => self.mtime(path, origin.writer, mtime, changed),
        }
    }

    /// Bumps the global version; returns the new version.
    fn bump_root(&mut self, writer: u32, mtime: u32) -> Result<u64> {
        let root = self.reader().root()?;
        let meta = Meta {
            version: root.meta.version + 1,
            writer,
            mtime,
            ..root.meta
        };
        let value = encode_value(&meta, root.flags & !flags::VERSION_ROW_DIR, b"", b"");
        let store = self.store;
        store
            .dbs
            .entries
            .put(self.txn_mut(), &inode_key(ROOT_INODE), &value)?;
        Ok(meta.version)
    }

    fn put_entry(&mut self, meta: &Meta, entry_flags: u8, name: &[u8], data: &[u8]) -> Result<()> {
        let value = encode_value(meta, entry_flags, name, data);
        let store = self.store;
        store
            .dbs
            .entries
            .put(self.txn_mut(), &inode_key(meta.inode), &value)?;
        Ok(())
    }

    fn put_dirent(&mut self, parent: u64, name: &[u8], inode: u64) -> Result<()> {
        let store = self.store;
        store.dbs.children.put(
            self.txn_mut(),
            &dirent_key(parent, name),
            &inode.to_le_bytes(),
        )?;
        Ok(())
    }

    /// Removes an entry and its directory link.
    fn remove_entry(&mut self, inode: u64, parent: u64, name: &[u8]) -> Result<()> {
        let store = self.store;
        let txn = self.txn_mut();
        let linked = store.dbs.children.delete(txn, &dirent_key(parent, name))?;
        let existed = store.dbs.entries.delete(txn, &inode_key(inode))?;
        if !linked || !existed {
            return Err(StoreError::Corrupt(format!(
                "entry {inode} was not fully linked"
            )));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        path: &[u8],
        offset: u64,
        data: &[u8],
        truncate: bool,
        create: bool,
        origin: Origin,
        changed: &mut bool,
    ) -> Result<u32> {
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|end| *end <= MAX_FILE_SIZE as u64)
            .ok_or(StoreError::TooBig)?;
        let end = end as usize;
        let offset = offset as usize;
        let (parent_parts, base) = path::split(path);
        let (parent_inode, guest, existing) = {
            let reader = self.reader();
            let parent = reader.parent_dir(&parent_parts)?;
            if path::is_forbidden_name(base) {
                return Err(StoreError::Access);
            }
            let guest = path::guest_config(&parent_parts, base);
            if let Some(guest) = &guest
                && !self.replaying
                && self.vmlist.conflicts(guest)
            {
                return Err(StoreError::Exists);
            }
            let existing = match reader.child(parent.meta.inode, base)? {
                Some(entry) if entry.meta.kind != Kind::File => {
                    return Err(StoreError::NotDirectory);
                }
                Some(_) if create => return Err(StoreError::Exists),
                Some(entry) => Some((entry.meta.inode, entry.data.to_vec())),
                None if !create => return Err(StoreError::NotFound),
                None => None,
            };
            (parent.meta.inode, guest, existing)
        };
        let version = self.bump_root(origin.writer, origin.mtime)?;
        let (inode, new_data) = match existing {
            Some((inode, mut content)) => {
                if end > content.len() {
                    content.resize(end, 0);
                } else if truncate {
                    content.truncate(end);
                }
                content[offset..end].copy_from_slice(data);
                (inode, content)
            }
            // Only CREATE makes a file, and it carries no data.
            None => (version, Vec::new()),
        };
        let meta = Meta {
            inode,
            parent: parent_inode,
            version,
            writer: origin.writer,
            mtime: origin.mtime,
            kind: Kind::File,
        };
        self.put_entry(&meta, 0, base, &new_data)?;
        if inode == version {
            self.put_dirent(parent_inode, base, inode)?;
        }
        if let Some(guest) = guest {
            self.vmlist.register(&guest);
        }
        *changed = true;
        Ok(data.len() as u32)
    }

    fn mkdir(&mut self, path: &[u8], origin: Origin, changed: &mut bool) -> Result<u32> {
        let (parent_parts, base) = path::split(path);
        let parent_inode = {
            let reader = self.reader();
            let parent = reader.parent_dir(&parent_parts)?;
            if path::is_forbidden_name(base) {
                return Err(StoreError::Access);
            }
            if reader.child_inode(parent.meta.inode, base)?.is_some() {
                return Err(StoreError::Exists);
            }
            parent.meta.inode
        };
        let version = self.bump_root(origin.writer, origin.mtime)?;
        let meta = Meta {
            inode: version,
            parent: parent_inode,
            version,
            writer: origin.writer,
            mtime: origin.mtime,
            kind: Kind::Dir,
        };
        self.put_entry(&meta, 0, base, &[])?;
        self.put_dirent(parent_inode, base, version)?;
        if path::is_lock_parent(&parent_parts) {
            self.reset_lock(version, &parent_parts, base)?;
        }
        *changed = true;
        Ok(0)
    }

    fn reset_lock(&mut self, inode: u64, parent_parts: &[&[u8]], base: &[u8]) -> Result<()> {
        let checksum = self.entry_checksum(inode)?;
        let mut lock_path = path::join(parent_parts);
        lock_path.push(b'/');
        lock_path.extend_from_slice(base);
        let now = (self.clock)();
        self.locks.reset(&lock_path, checksum, now);
        Ok(())
    }

    fn entry_checksum(&self, inode: u64) -> Result<[u8; 32]> {
        let entry = self
            .reader()
            .entry(inode)?
            .ok_or_else(|| StoreError::Corrupt(format!("entry {inode} vanished")))?;
        Ok(entry.checksum())
    }

    fn delete(&mut self, path: &[u8], origin: Origin, changed: &mut bool) -> Result<u32> {
        let (meta, name) = {
            let reader = self.reader();
            let entry = reader.resolve(path)?.ok_or(StoreError::NotFound)?;
            if entry.meta.inode == ROOT_INODE {
                return Err(StoreError::Access);
            }
            if entry.meta.kind == Kind::Dir && reader.has_children(entry.meta.inode)? {
                return Err(StoreError::NotEmpty);
            }
            (entry.meta, entry.name.to_vec())
        };
        if meta.kind == Kind::Dir {
            self.locks.remove(&normalized(path));
        }
        self.remove_entry(meta.inode, meta.parent, &name)?;
        self.bump_root(origin.writer, origin.mtime)?;
        if let Some(guest) = path::guest_config_of_path(path) {
            self.vmlist.delete(guest.vmid);
        }
        *changed = true;
        Ok(0)
    }

    fn rename(
        &mut self,
        from: &[u8],
        to: &[u8],
        origin: Origin,
        changed: &mut bool,
    ) -> Result<u32> {
        let from_guest = path::guest_config_of_path(from);
        let to_guest = path::guest_config_of_path(to);
        let (from_meta, from_name, from_flags, from_has_children) = {
            let reader = self.reader();
            let entry = reader.resolve(from)?.ok_or(StoreError::NotFound)?;
            if entry.meta.inode == ROOT_INODE {
                return Err(StoreError::Access);
            }
            let has_children =
                entry.meta.kind == Kind::Dir && reader.has_children(entry.meta.inode)?;
            (entry.meta, entry.name.to_vec(), entry.flags, has_children)
        };
        if from_meta.kind == Kind::File
            && !self.replaying
            && let Some(target) = &to_guest
            && self.vmlist.conflicts(target)
            && from_guest
                .as_ref()
                .is_none_or(|source| source.vmid != target.vmid)
        {
            return Err(StoreError::Exists);
        }
        if from_meta.kind == Kind::Dir && path::is_lockdir(from) {
            return Err(StoreError::Access);
        }
        let existing_target = {
            let reader = self.reader();
            match reader.resolve(to)? {
                Some(target) => {
                    if target.meta.inode == ROOT_INODE {
                        return Err(StoreError::Access);
                    }
                    if target.meta.inode == from_meta.inode {
                        // rename onto itself: nothing to do (the kernel never asks).
                        return Ok(0);
                    }
                    if target.meta.kind == Kind::Dir && reader.has_children(target.meta.inode)? {
                        return Err(StoreError::NotEmpty);
                    }
                    Some((target.meta, target.name.to_vec()))
                }
                None => None,
            }
        };
        let (target_parent, target_name) = match &existing_target {
            Some((target, name)) => {
                // C quirk kept for identical trees in mixed clusters: the
                // target is removed before the source is checked, so a failing
                // rename of a non-empty directory still removes it.
                self.remove_entry(target.inode, target.parent, name)?;
                *changed = true;
                if target.kind == Kind::Dir {
                    self.locks.remove(&normalized(to));
                }
                (target.parent, name.clone())
            }
            None => {
                let (parts, base) = path::split(to);
                let parent = self.reader().parent_dir(&parts)?;
                if path::is_forbidden_name(base) {
                    return Err(StoreError::Access);
                }
                (parent.meta.inode, base.to_vec())
            }
        };
        if from_has_children {
            return Err(StoreError::NotEmpty);
        }
        if target_parent == from_meta.inode {
            // A directory into itself (the kernel answers EINVAL before asking
            // us; the C daemon would link the entry under itself).
            return Err(StoreError::Invalid("rename of a directory into itself"));
        }
        let data = {
            let reader = self.reader();
            let entry = reader
                .entry(from_meta.inode)?
                .ok_or_else(|| StoreError::Corrupt("rename source vanished".into()))?;
            entry.data.to_vec()
        };
        let store = self.store;
        store
            .dbs
            .children
            .delete(self.txn_mut(), &dirent_key(from_meta.parent, &from_name))?;
        let version = self.bump_root(origin.writer, origin.mtime)?;
        let meta = Meta {
            parent: target_parent,
            version,
            writer: origin.writer,
            mtime: origin.mtime,
            ..from_meta
        };
        let entry_flags = match from_meta.kind {
            Kind::Dir => from_flags | flags::EMPTY_BLOB,
            Kind::File => from_flags,
        };
        self.put_entry(&meta, entry_flags, &target_name, &data)?;
        self.put_dirent(target_parent, &target_name, meta.inode)?;
        if from_meta.kind == Kind::File {
            if let Some(source) = &from_guest {
                self.vmlist.delete(source.vmid);
            }
            if let Some(target) = &to_guest {
                self.vmlist.register(target);
            }
        }
        *changed = true;
        Ok(0)
    }

    fn mtime(&mut self, path: &[u8], writer: u32, mtime: u32, changed: &mut bool) -> Result<u32> {
        let (parent_parts, base) = path::split(path);
        let (meta, entry_flags, is_lock) = {
            let reader = self.reader();
            let parent = reader.parent_dir(&parent_parts)?;
            if path::is_forbidden_name(base) {
                return Err(StoreError::Access);
            }
            let entry = reader
                .child(parent.meta.inode, base)?
                .ok_or(StoreError::NotFound)?;
            let is_lock = path::is_lock_parent(&parent_parts) && entry.meta.kind == Kind::Dir;
            if is_lock && (mtime < entry.meta.mtime || entry.meta.writer != writer) {
                return Err(StoreError::Access);
            }
            (entry.meta, entry.flags, is_lock)
        };
        let data = {
            let reader = self.reader();
            reader
                .entry(meta.inode)?
                .map(|entry| entry.data.to_vec())
                .unwrap_or_default()
        };
        let version = self.bump_root(writer, mtime)?;
        let new_meta = Meta {
            version,
            writer,
            mtime,
            ..meta
        };
        let new_flags = match meta.kind {
            Kind::Dir => entry_flags | flags::EMPTY_BLOB,
            Kind::File => entry_flags,
        };
        self.put_entry(&new_meta, new_flags, base, &data)?;
        if is_lock {
            self.reset_lock(meta.inode, &parent_parts, base)?;
        }
        *changed = true;
        Ok(0)
    }
}

/// The inodes listed in an index blob (spec/memdb.md §6), validated.
fn index_inodes(blob: &[u8]) -> Result<Vec<u64>> {
    let bad = |reason: &str| StoreError::Corrupt(format!("leader index: {reason}"));
    let header = blob.get(..32).ok_or_else(|| bad("shorter than 32 bytes"))?;
    let count = u32::from_le_bytes([header[24], header[25], header[26], header[27]]) as usize;
    let bytes = u32::from_le_bytes([header[28], header[29], header[30], header[31]]) as usize;
    if bytes != blob.len() || count.checked_mul(40).and_then(|n| n.checked_add(32)) != Some(bytes) {
        return Err(bad("length fields do not match"));
    }
    Ok(blob[32..]
        .chunks_exact(40)
        .map(|entry| {
            let mut inode = [0u8; 8];
            inode.copy_from_slice(&entry[..8]);
            u64::from_le_bytes(inode)
        })
        .collect())
}

fn normalized(path: &[u8]) -> Vec<u8> {
    let parts: Vec<&[u8]> = path::components(path).collect();
    path::join(&parts)
}

/// Every guest config in the tree, in tree order.
pub(crate) fn collect_guest_configs(reader: &Reader<'_>) -> Result<Vec<GuestConfig>> {
    let mut configs = Vec::new();
    let Some(nodes) = reader.resolve(b"nodes")? else {
        return Ok(configs);
    };
    if nodes.meta.kind != Kind::Dir {
        return Ok(configs);
    }
    let mut node_dirs = Vec::new();
    reader.for_each_child(nodes.meta.inode, |node| {
        if node.meta.kind == Kind::Dir && path::is_valid_node_name(node.name) {
            node_dirs.push((node.meta.inode, node.name.to_vec()));
        }
        true
    })?;
    for (node_inode, node_name) in node_dirs {
        for type_dir in [&b"qemu-server"[..], b"openvz", b"lxc"] {
            let Some(dir) = reader.child(node_inode, type_dir)? else {
                continue;
            };
            if dir.meta.kind != Kind::Dir {
                continue;
            }
            let parts: [&[u8]; 3] = [b"nodes", &node_name, type_dir];
            reader.for_each_child(dir.meta.inode, |file| {
                if file.meta.kind == Kind::File
                    && let Some(config) = path::guest_config(&parts, file.name)
                {
                    configs.push(config);
                }
                true
            })?;
        }
    }
    Ok(configs)
}

/// Every directory in `priv/lock` with its entry checksum.
fn collect_lock_dirs(reader: &Reader<'_>) -> Result<Vec<(Vec<u8>, [u8; 32])>> {
    let mut locks = Vec::new();
    let Some(lock_dir) = reader.resolve_parts(path::LOCK_DIR)? else {
        return Ok(locks);
    };
    if lock_dir.meta.kind != Kind::Dir {
        return Ok(locks);
    }
    reader.for_each_child(lock_dir.meta.inode, |entry| {
        if entry.meta.kind == Kind::Dir {
            let mut lock_path = b"priv/lock/".to_vec();
            lock_path.extend_from_slice(entry.name);
            locks.push((lock_path, entry.checksum()));
        }
        true
    })?;
    Ok(locks)
}

/// Write access to the tree: the `CanWrite` level of the type states. Only
/// `Session::writer` makes one, and only for the holder of the
/// `ApplyPermit`.
///
/// A read handle has no way to write:
/// ```compile_fail,E0599
/// # fn demo(session: &pmxcfs_store::Session<'_>) {
/// use pmxcfs_store::{Op, Origin};
/// let reader = session.reader();
/// reader.apply(&Op::Mkdir { path: b"x" }, Origin { writer: 0, mtime: 0 });
/// # }
/// ```
/// and a writer cannot be had without the permit:
/// ```compile_fail,E0451
/// # fn demo(session: &mut pmxcfs_store::Session<'_>) {
/// let writer = session.writer(&mut pmxcfs_store::ApplyPermit { _private: () });
/// # }
/// ```
pub struct Writer<'a, 's> {
    session: &'a mut Session<'s>,
}

impl<'s> Writer<'_, 's> {
    /// Applies one operation; returns the byte count for writes, else 0.
    /// The change is visible to readers at once and durable after the
    /// session's next `commit`.
    pub fn apply(&mut self, op: &Op<'_>, origin: Origin) -> Result<u32> {
        self.session.apply_op(op, origin)
    }

    pub fn reader(&self) -> Reader<'_> {
        self.session.reader()
    }

    /// `memdb_lock_expired` on this node's clock (spec/filesystem.md §8).
    pub fn lock_expired(&mut self, path: &[u8], checksum: [u8; 32]) -> bool {
        let now = (self.session.clock)();
        self.session.locks.expired(&normalized(path), checksum, now)
    }

    /// The checksum of a lock directory if `path` is an existing lock
    /// directory (the precondition of UNLOCK_REQUEST and UNLOCK).
    pub fn lock_checksum(&self, path: &[u8]) -> Result<Option<[u8; 32]>> {
        if !path::is_lockdir(path) {
            return Ok(None);
        }
        Ok(self
            .session
            .reader()
            .resolve(path)?
            .filter(|entry| entry.meta.kind == Kind::Dir)
            .map(|entry| entry.checksum()))
    }

    /// The DCDB resync commit (spec/memdb.md §7): makes this tree the
    /// leader's. `master_index` is the leader's index blob, `updates` the
    /// entries the leader sent (the root as its `__version__` row, inode 0).
    /// Entries the leader does not have are deleted. The result must have
    /// exactly the leader's index, else nothing changes and the call fails
    /// (the DFSM then leaves and rejoins). Durable when it returns: the
    /// session checkpoints before and after.
    pub fn apply_resync(&mut self, master_index: &[u8], updates: &[Row]) -> Result<()> {
        let session = &mut *self.session;
        session.commit()?;
        session.checkpoint()?;
        match session.replace_tree(master_index, updates) {
            Ok(()) => {}
            Err(error) => {
                // Back to the checkpoint taken above.
                session.abort_to_checkpoint()?;
                return Err(error);
            }
        }
        session.checkpoint()?;
        session.rebuild_derived().inspect_err(|error| {
            // As the C daemon's error flag: the tree is the leader's, but it
            // breaks the vmid rule; refuse changes until restart.
            tracing::error!(%error, "resync produced an invalid tree");
            session.poisoned = true;
            session.poison_errno = libc::EIO;
        })
    }

    /// UNLOCK: deletes the lock directory if its checksum still matches.
    /// Returns whether it was deleted.
    pub fn unlock(&mut self, path: &[u8], checksum: [u8; 32], origin: Origin) -> Result<bool> {
        if self.lock_checksum(path)? != Some(checksum) {
            return Ok(false);
        }
        self.apply(&Op::Delete { path }, origin)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A disk failure poisons the session with its errno: ENOSPC for a
    /// full disk whichever layer saw it (the journal, LMDB's I/O, a full
    /// LMDB map), EIO for anything else.
    #[test]
    fn a_poisoned_session_says_which_errno() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let (mut session, _permit) = store.session(Durability::Relaxed).expect("session");
        let io = |errno| std::io::Error::from_raw_os_error(errno);
        let cases = [
            (StoreError::io("/x", io(libc::ENOSPC)), libc::ENOSPC),
            (StoreError::io("/x", io(libc::EROFS)), libc::EROFS),
            (
                StoreError::Db(heed::Error::Io(io(libc::ENOSPC))),
                libc::ENOSPC,
            ),
            (
                StoreError::Db(heed::Error::Io(io(libc::EDQUOT))),
                libc::EDQUOT,
            ),
            (
                StoreError::Db(heed::Error::Mdb(heed::MdbError::MapFull)),
                libc::ENOSPC,
            ),
            (StoreError::Corrupt("x".into()), libc::EIO),
        ];
        for (error, errno) in cases {
            session.poison(&error);
            assert!(session.is_poisoned());
            assert_eq!(session.poison_errno(), Some(errno), "{error}");
        }
    }

    /// A commit of several large writes (one CPG dispatch of them) leaves
    /// no more than `BATCH_KEPT_BYTES` of buffer behind.
    #[test]
    fn the_journal_batch_gives_back_what_a_large_commit_took() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let (mut session, mut permit) = store.session(Durability::Relaxed).expect("session");
        let origin = Origin {
            writer: 0,
            mtime: 1,
        };
        let data = vec![7u8; 1 << 20];
        for name in [&b"a"[..], b"b", b"c", b"d"] {
            let mut writer = session.writer(&mut permit);
            writer
                .apply(&Op::Create { path: name }, origin)
                .expect("create");
            writer
                .apply(
                    &Op::Write {
                        path: name,
                        offset: 0,
                        data: &data,
                        truncate: false,
                    },
                    origin,
                )
                .expect("write");
        }
        assert!(session.batch.len() > 4 << 20, "four writes in one batch");
        session.commit().expect("commit");
        assert!(session.batch.is_empty());
        assert!(session.batch.capacity() <= BATCH_KEPT_BYTES);
        assert_eq!(session.stats().journal_writes, 1);
        drop(session);
    }
}
