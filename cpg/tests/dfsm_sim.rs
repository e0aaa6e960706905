//! Deterministic simulation of the DFSM (VOPR style) over a simulated CPG.
//!
//! The simulated CPG has virtual synchrony: every partition has one totally
//! ordered list of pending messages; a message is delivered, in one step, to
//! every member of the configuration current at its delivery (sender
//! included); every member of a configuration sees the same confchgs and the
//! same messages between them. A membership change first delivers a random
//! prefix of the pending messages in the old configuration (a voluntary
//! leaver's messages always), then the confchg; the rest is carried into the
//! new configuration(s) with its sender (messages of departed senders are
//! dropped). Partitions split the member set into groups that proceed with
//! their own views and merge later. Quorum is node based as in corosync: a
//! node is quorate iff more than half of all nodes are up in its partition,
//! whatever the CPG group membership of the pmxcfs processes is.
//!
//! Policies: `Gated` and `Ungated` are the C protocol (writers on SYNCED
//! members only, or anywhere like C pmxcfs); `Strict` is a group of our
//! nodes with `Dfsm::set_write_safety` and writers waiting for
//! `Dfsm::write_gate`: there every write must first be applied by more than
//! half of the nodes at once (ground truth: the applications' own logs), no
//! resync may erase any write, and no acknowledged write may be lost, except
//! for the own-delivery window (extended virtual synchrony, below) and what
//! it allows. `DFSM_SIM_POLICY=strict|gated|ungated` forces one (default: a
//! third each).
//!
//! Applications. Most seeds run a toy key-value application (`KvApp`: the
//! DCDB's version counters, index blob, leader selection, updates and commit
//! in miniature). Every 4th seed (`seed % 4 == 3`; `DFSM_SIM_DCDB_EVERY=<n>`
//! changes the 4, 0 = never; `DFSM_SIM_APP=dcdb|kv` forces one) runs the real
//! DCDB application (`pmxcfs_cpg::dcdb::Dcdb`) on a real store per node (LMDB
//! and journal in a temporary directory, under /dev/shm when it exists, with
//! a random checkpoint interval per node): a set of key `k` is a DCDB WRITE
//! of `/k<k>` with the write id as its content (after a CREATE of the file,
//! itself a write of the simulation, when the writer's store lacks it), a
//! delete a DCDB DELETE. Leader selection, updates, commit and checksums are
//! then the real code's. A process crash drops the store session without
//! closing it (the restart replays the journal); the restarted process must
//! see exactly what the dead one had (index and checksum).
//!
//! Ground truth, for both applications: a thin wrapper (`Tracked`) around
//! the application logs every write it applied (and the value it replaced)
//! and keeps the model of its state's history (`History`: the write ids it
//! contains, each key's last write, the writes its lineage lost with a
//! queue). After every write it checks that the application's store holds
//! what the model says; after every resync, that the store is exactly the
//! leader's state as the leader sent it (index and checksum) and that it
//! holds the leader's model, which it adopts.
//!
//! Extended virtual synchrony (EVS): at a split, each side may deliver some
//! of its pending messages before its confchg, to its own members only
//! (corosync's CPG does this and hides the transitional configuration; a
//! side skips the other side's messages). `DFSM_SIM_EVS=1|0` turns it on or
//! off for every seed; by default three of four seeds of the `Strict`
//! policy have it (all but `seed % 4 == 2`). A write first applied by at
//! most half of the nodes in such a delivery is an *own-delivery write*
//! (the own-delivery window: corosync hands a node its own message before
//! the others got it; RELIABILITY.md).
//! Write safety closes the window by re-sending: both applications offer
//! `Application::write_footprint` (the toy: the key's value; the DCDB its
//! own), and a node re-sends its own writes that the agreed state lacks
//! after a resync within a majority (`Dfsm::check_own_writes`). Every
//! message of the simulation names its write (the toy's payload carries the
//! id, a DCDB WRITE has it as content, CREATE and DELETE in the offset field
//! the DCDB ignores for them), so a re-send (same payload, new message
//! count) counts as that write: `Sim::multicast` registers it (only the
//! process that sent the write may re-send it), the histories apply it under
//! the write's id.
//!
//! Erased by a resync, therefore: a resync erases a write from a node's
//! history when the history held it and the leader's does not; a later
//! application of the write (its re-send) restores it. Under write safety a
//! resync may erase only own-delivery writes (whose last first application,
//! of the write or of a re-send of it, was a minority's transitional
//! delivery) and stale copies of former ones that a majority holds again
//! (re-sent), and by the next settle each erased own-delivery write must be
//! undone: the write is in the settled history again (re-sent, or a branch
//! that held it won a later resync), or it is superseded (when its writer
//! checked it, after the last resync that erased it there, or when its
//! re-send reached the writer, its key's value came from a write first
//! applied after it was sent, i.e. concurrent with it: the DFSM does not
//! re-send a write whose key the majority changed since, and a re-sent
//! CREATE of a file that exists does nothing), or its writer's process died
//! before it checked the write after that resync or before a re-send of it
//! reached a majority (the list of own writes is in memory), or it was never
//! applied on its writer, whose client was answered that it failed (its
//! queue 2 was dropped; the other side had applied it in a transitional
//! delivery). An acknowledged write must be in the settled state, overwritten
//! by a later write, or one of these. A write applied again to a history
//! that holds it must change nothing (the key still holds its value), but
//! for the findings below. Counted (`write_safety_summary`): own-delivery
//! writes, erasures of them, re-sends, those not back and why.
//!
//! Write-safety findings (real, not fixed; each detected exactly, counted,
//! its lost acknowledged writes bounded (`FINDINGS_LOSS_BOUND_PER_10K`);
//! `DFSM_SIM_STRICT=1` fails on them):
//!
//! W1. ABA re-send. The own-delivery check compares states: a key the
//!     majority changed back to the value before our write (typically: it
//!     deleted the file we created) looks as if the majority never got our
//!     write, which is then re-sent and undoes the majority's later write
//!     (lost). Also without EVS: every confchg without a majority or with
//!     joiners leaves the node's recent writes unconfirmed. The DFSM drops
//!     a kept own write when a later write it applies itself changes the
//!     same key (seeds 33, 37 and 86 before that); what remains is a change
//!     it never saw (seed 42; 2381 without EVS). Detected when the
//!     re-send is sent: the sender's (agreed) state holds the write and the
//!     first write of the check's batch finds its key at the value it had
//!     replaced on its writer.
//! W2. A branch ahead by own-delivery writes wins a resync (highest version,
//!     then newest mtime) over writes a majority applied, which it erases
//!     (lost unless a branch holding them wins later; seed 671), and over
//!     own-delivery writes of the other branch made after them, which their
//!     writer then takes for superseded (seed 84003 with the DCDB).
//! W3. C's resend of queue 1 at a join re-applies a message that the other
//!     side of a split applied in a transitional delivery, undoing the
//!     writes in between (seed 1224 with the DCDB).
//! W4. The prefix rule takes a lacked own write for held although its key
//!     is still as before it, and does not re-send it: (a) when that state
//!     is what the writer's own earlier write left (`held_prefix` does not
//!     compare the keys of the writes it takes for held: a lock the
//!     majority took again after ours was released must not be deleted by
//!     a re-send; seed 21313, where `make sim-strict` found it), or (b)
//!     when a later own DELETE of the same check finds its file gone
//!     because the majority deleted it too (it passes for held, and with
//!     it every earlier write; seed 61967 with the DCDB). Detected at the
//!     writer's check after the erasure.
//!
//! (Seeds of `DFSM_SIM_POLICY=strict DFSM_SIM_EVS=1` unless said otherwise,
//! the toy application unless named; `DFSM_SIM_TRACE=1` shows the finding.)
//!
//! Replay: `DFSM_SIM_SEED=<seed>` runs one seed (`DFSM_SIM_TRACE=1` prints
//! the events); `DFSM_SIM_SEEDS=<n>` runs seeds 0..n (default 300; the
//! write-safety test: `DFSM_SIM_STRICT_SEEDS`, default 400), from
//! `DFSM_SIM_SEED_BASE` on if set.
//!
//! Also random: client writes (sets and deletes) on random members, crashes
//! (node down; the process restarts later with its persistent state and a
//! new pid), pmxcfs restarts (node stays up), DFSM-requested leaves and
//! restarts, failed CPG sends, VERIFY requests, clock skew between nodes.
//!
//! Checked after every step (see `check_step`) and after every settle phase
//! (heal everything, restart what is down, drain; see `settle`):
//! * SYNCED members of one configuration have identical state and checksum;
//! * every writer answered with success had applied its write;
//! * every application's store holds what its history model says (above);
//! * after settling every member is SYNCED within a bound, all are identical,
//!   no writer waits forever, a VERIFY round passes and a probe write is
//!   acknowledged (progress);
//! * every resync that erased writes has a known cause, and no acknowledged
//!   write is lost, except where the C protocol itself loses it (see "C
//!   protocol findings" below; such losses are counted per cause, and their
//!   share of the acknowledged writes is bounded by `dfsm_simulation`) or,
//!   under write safety, as described for the own-delivery window above.
//!
//! C protocol findings (the Rust DFSM keeps them: it must behave like the C
//! nodes in the same group). Reproduced step by step by the `c_quirk_*`
//! tests at the end of this file.
//!
//! 1. Unsynced-sender divergence (spec dfsm.md §7.3). A member in START_SYNC
//!    or UPDATE mode may send NORMAL messages (pmxcfs gates FUSE writes on
//!    quorum only, not on the DFSM mode). Such a message delivered after the
//!    last STATE but before UPDATE_COMPLETE is applied at once, in CPG order,
//!    by the SYNCED members, while the updating members queue it in queue 1
//!    and apply it after queue 2 (the synced senders' messages). Two writes
//!    to one key leave SYNCED members of one configuration with different
//!    values, and both writers get success. If a join comes before
//!    UPDATE_COMPLETE, the sender resends the message from its queue 1 and
//!    the synced members apply it a second time. C repairs the divergence
//!    only through the next VERIFY round (mismatching members leave and
//!    resync) or a resync; either keeps one branch, so acknowledged writes
//!    can be lost. Runs with writers on any member (`Policy::Ungated`, like
//!    pmxcfs) detect the event exactly (a SYNCED member applies a NORMAL
//!    message whose sender's own mode is START_SYNC or UPDATE at that point
//!    of the total order); from then on they only check convergence
//!    (settling runs VERIFY rounds as C would) and liveness. Runs with
//!    writers on SYNCED members only (`Policy::Gated`) assert that the event
//!    never happens and keep every check.
//!
//! 2. Forked histories lose acknowledged writes. The resync leader is the
//!    member with the highest (version, mtime); its state replaces the
//!    others', nothing is merged. A write is acknowledged when the writer
//!    applied it, and quorum counts corosync *nodes*, not DFSM group members.
//!    Two states none of which contains the other (a fork) arise when
//!    * (a) members in UPDATE mode lose their queue 2 (a confchg discards it;
//!      also a process that dies or restarts loses its queues): writes the
//!      SYNCED members applied (and acknowledged) meanwhile are missing
//!      there and come back only if a holder joins a later resync;
//!    * (b) a quorate partition's group lacks the processes that hold newer
//!      writes (they crashed, are restarting or in LEAVE mode, while their
//!      nodes still count for quorum) and writes on its older state;
//!    * (c) a member that leaves on its own (a failed send, a VERIFY
//!      mismatch, a failed sync round) stops applying at once, while the
//!      others count it as synced until its confchg: writes in between
//!      reach fewer nodes than the group has (ARCHITECTURE.md, "Write
//!      safety", closes this for our nodes).
//!
//!    The next resync that sees both branches keeps the one with more writes
//!    (or the newer mtime) and erases the other branch's acknowledged writes,
//!    even when no holder ever crashed.
//!
//! Every resync that drops writes from a history (an erasure) must name the
//! event that began the fork, from the two histories and the simulator's own
//! log (`Cause`, `Sim::cause_of`), else the run fails:
//! * `Queue`: a write of one branch is one the other branch's lineage lost
//!   with a queue (2a: a confchg's queue-2 discard; also a process that died,
//!   or restarted after a LEAVE, with it queued);
//! * otherwise the first write of one of the branches (the earliest first
//!   application among the writes the other branch lacks) must have been
//!   first applied by at most half of the nodes, and why: its CPG group held
//!   at most half of the nodes (`MinorityGroup`, 2b); the group's other
//!   members lost it with a queue (`Queue`, 2a, also when their lineage has
//!   since been replaced by a resync); they had already diverged by finding
//!   1 and processed it without effect, or it is an unsynced sender's write
//!   (`UnsyncedSender`); or they had left on their own (`LeftOnItsOwn`, 2c);
//! * a resync whose leader lacks writes and has none of its own (no fork) is
//!   accepted only if the leader's lineage applied a write twice (finding
//!   1's resend), which inflates its version (`UnsyncedSender`).
//!
//! A lost acknowledged write is accepted only under the C policies and only
//! if a resync with a known cause erased it; it is counted under the cause
//! of the last resync that erased it, and `dfsm_simulation` bounds the share
//! of lost writes among the acknowledged ones (`C_LOSS_BOUND_PER_10K`).
//! `DFSM_SIM_STRICT=1` accepts only losses where every holder died (the
//! brief's exception), to list examples of the others.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::rc::Rc;

use pmxcfs_cpg::dcdb::Dcdb;
use pmxcfs_cpg::dfsm::{
    Action, AppError, Application, Ctx, Dfsm, Footprint, MemberId, Message, MessageBody, Mode,
    StateDecision, Votes, WriteGate,
};
use pmxcfs_cpg::wire::{DcdbType, FusePayload};
use pmxcfs_store::{CheckpointLimits, Durability, Store};

// ---------------------------------------------------------------------------
// PRNG

/// splitmix64.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 for n == 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    fn range(&mut self, lo: u64, hi_inclusive: u64) -> u64 {
        lo + self.below(hi_inclusive - lo + 1)
    }

    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

// ---------------------------------------------------------------------------
// A DCDB-like toy application: replicated key → value map with memdb-style
// version counters, index blob, leader selection, updates and commit.

const PROTOCOL: u32 = 1;
const SUBTYPE_WRITE: u16 = 1;
const OP_SET: u8 = 1;
const OP_DELETE: u8 = 2;
const ENOENT: i32 = -2;
const KEYS: &[&str] = &["a", "b", "c", "d", "e"];

fn fnv(seed: u64, parts: &[&[u8]]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    version: u64,
    mtime: u32,
    writer: u32,
    value: Vec<u8>,
}

impl Entry {
    fn digest(&self) -> u64 {
        fnv(
            0,
            &[
                &self.version.to_le_bytes(),
                &self.mtime.to_le_bytes(),
                &self.writer.to_le_bytes(),
                &self.value,
            ],
        )
    }
}

/// Persistent state of one toy node (what survives a crash).
#[derive(Clone, Debug, Default)]
struct KvStore {
    version: u64,
    mtime: u32,
    writer: u32,
    entries: BTreeMap<String, Entry>,
}

impl KvStore {
    /// The state blob (memdb index analogue): header, then per key its
    /// version and digest, sorted by key.
    fn index(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.mtime.to_le_bytes());
        out.extend_from_slice(&self.writer.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for (k, e) in &self.entries {
            out.push(k.len() as u8);
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(&e.version.to_le_bytes());
            out.extend_from_slice(&e.digest().to_le_bytes());
        }
        out
    }

    fn checksum(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, chunk) in out.chunks_mut(8).enumerate() {
            let mut parts: Vec<Vec<u8>> = vec![
                self.version.to_le_bytes().to_vec(),
                self.mtime.to_le_bytes().to_vec(),
                self.writer.to_le_bytes().to_vec(),
            ];
            for (k, e) in &self.entries {
                parts.push(k.as_bytes().to_vec());
                parts.push(e.version.to_le_bytes().to_vec());
                parts.push(e.value.clone());
            }
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            chunk.copy_from_slice(&fnv(i as u64 * 0x1234_5678, &refs).to_le_bytes());
        }
        out
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Index {
    version: u64,
    mtime: u32,
    writer: u32,
    entries: BTreeMap<String, (u64, u64)>,
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u8()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

fn parse_index(blob: &[u8]) -> Option<Index> {
    let mut r = Reader(blob);
    let version = r.u64()?;
    let mtime = r.u32()?;
    let writer = r.u32()?;
    let n = r.u32()?;
    let mut entries = BTreeMap::new();
    for _ in 0..n {
        let k = r.string()?;
        let v = r.u64()?;
        let d = r.u64()?;
        entries.insert(k, (v, d));
    }
    r.0.is_empty().then_some(Index {
        version,
        mtime,
        writer,
        entries,
    })
}

/// UPDATE payloads.
#[derive(Clone, Debug)]
enum Update {
    Root {
        version: u64,
        mtime: u32,
        writer: u32,
    },
    Entry {
        key: String,
        entry: Entry,
    },
}

fn encode_update(u: &Update) -> Vec<u8> {
    let mut out = Vec::new();
    match u {
        Update::Root {
            version,
            mtime,
            writer,
        } => {
            out.push(0);
            out.extend_from_slice(&version.to_le_bytes());
            out.extend_from_slice(&mtime.to_le_bytes());
            out.extend_from_slice(&writer.to_le_bytes());
        }
        Update::Entry { key, entry } => {
            out.push(1);
            out.push(key.len() as u8);
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(&entry.version.to_le_bytes());
            out.extend_from_slice(&entry.mtime.to_le_bytes());
            out.extend_from_slice(&entry.writer.to_le_bytes());
            out.extend_from_slice(&entry.value);
        }
    }
    out
}

fn decode_update(b: &[u8]) -> Option<Update> {
    let mut r = Reader(b);
    match r.u8()? {
        0 => Some(Update::Root {
            version: r.u64()?,
            mtime: r.u32()?,
            writer: r.u32()?,
        }),
        1 => {
            let key = r.string()?;
            let version = r.u64()?;
            let mtime = r.u32()?;
            let writer = r.u32()?;
            Some(Update::Entry {
                key,
                entry: Entry {
                    version,
                    mtime,
                    writer,
                    value: r.0.to_vec(),
                },
            })
        }
        _ => None,
    }
}

/// What a client write does to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Value := "w<id>" (toy) or file content := "<id>" (DCDB WRITE).
    Set,
    /// Remove the key (DCDB DELETE).
    Delete,
    /// DCDB only: CREATE the (empty) file, before a set of a missing file.
    Create,
}

/// A client write.
#[derive(Clone, Debug)]
struct WriteOp {
    id: u64,
    key: String,
    kind: Kind,
}

/// The toy application's message (sets and deletes only).
fn encode_write(op: &WriteOp) -> Vec<u8> {
    let code = match op.kind {
        Kind::Set => OP_SET,
        Kind::Delete => OP_DELETE,
        Kind::Create => unreachable!("the toy application has no CREATE"),
    };
    let mut out = vec![code];
    out.extend_from_slice(&op.id.to_le_bytes());
    out.push(op.key.len() as u8);
    out.extend_from_slice(op.key.as_bytes());
    out
}

fn decode_write(b: &[u8]) -> Option<WriteOp> {
    let mut r = Reader(b);
    let kind = match r.u8()? {
        OP_SET => Kind::Set,
        OP_DELETE => Kind::Delete,
        _ => return None,
    };
    let id = r.u64()?;
    let key = r.string()?;
    Some(WriteOp { id, key, kind })
}

fn value_of(id: u64) -> Vec<u8> {
    format!("w{id}").into_bytes()
}

fn id_of(value: &[u8]) -> u64 {
    std::str::from_utf8(&value[1..]).unwrap().parse().unwrap()
}

struct SyncRound {
    master_blob: Vec<u8>,
    master: Index,
    local: Index,
    updates: Vec<Update>,
}

struct KvApp {
    store: KvStore,
    quorate: bool,
    sync: Option<SyncRound>,
}

impl KvApp {
    fn new(store: KvStore) -> Self {
        Self {
            store,
            quorate: false,
            sync: None,
        }
    }
}

impl Application for KvApp {
    fn deliver(
        &mut self,
        _ctx: &mut Ctx<'_>,
        sender: MemberId,
        subtype: u16,
        time: u32,
        payload: &[u8],
    ) -> Result<i32, AppError> {
        // dcdb_deliver: a write while not quorate triggers a resync (leave).
        if !self.quorate {
            return Err(AppError::LEAVE);
        }
        let op = match (subtype, decode_write(payload)) {
            (SUBTYPE_WRITE, Some(op)) => op,
            _ => return Err(AppError::LEAVE),
        };
        let s = &mut self.store;
        if op.kind == Kind::Set {
            s.version += 1;
            s.mtime = time;
            s.writer = sender.node_id;
            let entry = Entry {
                version: s.version,
                mtime: time,
                writer: sender.node_id,
                value: value_of(op.id),
            };
            s.entries.insert(op.key, entry);
        } else if s.entries.remove(&op.key).is_some() {
            s.version += 1;
            s.mtime = time;
            s.writer = sender.node_id;
        } else {
            return Ok(ENOENT);
        }
        Ok(0)
    }

    fn get_state(&mut self, _ctx: &mut Ctx<'_>) -> Result<Vec<u8>, AppError> {
        Ok(self.store.index())
    }

    fn process_state_update(
        &mut self,
        ctx: &mut Ctx<'_>,
        states: &[(MemberId, &[u8])],
    ) -> Result<StateDecision, AppError> {
        let mut idx = Vec::new();
        for (_, blob) in states {
            idx.push(parse_index(blob).ok_or(AppError::LEAVE)?);
        }
        // dcdb_select_leader: highest version, then newest mtime; ties keep
        // the earlier (lower node id) member.
        let mut leader = 0;
        for i in 1..idx.len() {
            let l = &idx[leader];
            if idx[i].version > l.version || (idx[i].version == l.version && idx[i].mtime > l.mtime)
            {
                leader = i;
            }
        }
        let synced: Vec<bool> = states.iter().map(|(_, b)| *b == states[leader].1).collect();
        let local_pos = states
            .iter()
            .position(|(m, _)| *m == ctx.local())
            .ok_or(AppError::LEAVE)?;
        self.sync = Some(SyncRound {
            master_blob: states[leader].1.to_vec(),
            master: idx[leader].clone(),
            local: idx[local_pos].clone(),
            updates: Vec::new(),
        });
        let updates = (local_pos == leader).then(|| {
            let master = &idx[leader];
            let mut keys = BTreeSet::new();
            let mut root = false;
            for (i, other) in idx.iter().enumerate() {
                if i == leader {
                    continue;
                }
                if (other.version, other.mtime, other.writer)
                    != (master.version, master.mtime, master.writer)
                {
                    root = true;
                }
                for (k, rec) in &master.entries {
                    if other.entries.get(k) != Some(rec) {
                        keys.insert(k.clone());
                    }
                }
            }
            let s = &self.store;
            let mut out = Vec::new();
            if root {
                out.push(encode_update(&Update::Root {
                    version: s.version,
                    mtime: s.mtime,
                    writer: s.writer,
                }));
            }
            for k in keys {
                let entry = s.entries[&k].clone();
                out.push(encode_update(&Update::Entry { key: k, entry }));
            }
            out
        });
        Ok(StateDecision { synced, updates })
    }

    fn process_update(
        &mut self,
        _ctx: &mut Ctx<'_>,
        _sender: MemberId,
        payload: &[u8],
    ) -> Result<(), AppError> {
        let u = decode_update(payload).ok_or(AppError::LEAVE)?;
        self.sync.as_mut().ok_or(AppError::LEAVE)?.updates.push(u);
        Ok(())
    }

    fn commit(&mut self, _ctx: &mut Ctx<'_>) -> Result<(), AppError> {
        let round = self.sync.as_ref().ok_or(AppError::LEAVE)?;
        let mut new = self.store.clone();
        // Keys the local index had and the leader's lacks are deleted.
        for k in round.local.entries.keys() {
            if !round.master.entries.contains_key(k) {
                new.entries.remove(k);
            }
        }
        for u in &round.updates {
            match u {
                Update::Root {
                    version,
                    mtime,
                    writer,
                } => {
                    new.version = *version;
                    new.mtime = *mtime;
                    new.writer = *writer;
                }
                Update::Entry { key, entry } => {
                    new.entries.insert(key.clone(), entry.clone());
                }
            }
        }
        // bdb_backend_commit_update: the result must equal the leader's index.
        if new.index() != round.master_blob {
            return Err(AppError::LEAVE);
        }
        self.store = new;
        Ok(())
    }

    fn cleanup(&mut self) {
        self.sync = None;
    }

    fn checksum(&mut self) -> Option<Result<[u8; 32], AppError>> {
        Some(Ok(self.store.checksum()))
    }

    /// The key's value (not its version: the same write applied on
    /// another branch leaves the same footprint), `None` when absent.
    fn write_footprint(&mut self, subtype: u16, payload: &[u8]) -> Option<Footprint> {
        let op = decode_write(payload).filter(|_| subtype == SUBTYPE_WRITE)?;
        let state = self.store.entries.get(&op.key).map(|e| fnv(0, &[&e.value]));
        Some(vec![(op.key.into_bytes(), state)])
    }
}

// ---------------------------------------------------------------------------
// The real DCDB application, and the ground-truth wrapper around either.

/// The file of key `k` in the real store.
fn key_path(key: &str) -> String {
    format!("/k{key}")
}

/// The DCDB message of a client write: WRITE (truncating, the id as
/// content), DELETE or CREATE of the key's file. DELETE and CREATE carry
/// the write id in the offset field, which the DCDB ignores for them (C
/// sends 0): every message of the simulation names its write, so a re-sent
/// one (new message count, same payload) is recognised (`write_of`).
fn encode_dcdb(op: &WriteOp) -> (u16, Vec<u8>) {
    let path = key_path(&op.key);
    let content = op.id.to_string();
    let plain = FusePayload {
        offset: u32::try_from(op.id).expect("write ids fit the offset field"),
        flags: 0,
        path: path.as_bytes(),
        to: None,
        data: &[],
    };
    let (kind, payload) = match op.kind {
        Kind::Set => (
            DcdbType::Write,
            FusePayload {
                offset: 0,
                flags: 1,
                data: content.as_bytes(),
                ..plain
            },
        ),
        Kind::Delete => (DcdbType::Delete, plain),
        Kind::Create => (DcdbType::Create, plain),
    };
    let mut out = Vec::new();
    payload.encode(&mut out).expect("encode a DCDB message");
    (kind as u16, out)
}

/// The write id a NORMAL message of the simulation carries (either
/// application's encoding), whatever its message count.
fn write_of(dcdb: bool, subtype: u16, payload: &[u8]) -> Option<u64> {
    if !dcdb {
        return (subtype == SUBTYPE_WRITE)
            .then(|| decode_write(payload))
            .flatten()
            .map(|op| op.id);
    }
    let fuse = FusePayload::decode(payload).ok()?;
    match DcdbType::try_from(subtype).ok()? {
        DcdbType::Write => std::str::from_utf8(fuse.data).ok()?.parse().ok(),
        DcdbType::Create | DcdbType::Delete => Some(u64::from(fuse.offset)),
        _ => None,
    }
}

/// What a store holds for a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Val {
    Absent,
    /// DCDB: the file exists and is empty (created, not written yet).
    Empty,
    /// The value written by this write id.
    Id(u64),
}

/// How a history lost a write it never applied although others did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Dropped {
    /// A confchg discarded it from queue 2 (finding 2a).
    Queue2Discard,
    /// The process died (crash, kill) with it in a queue.
    QueueLostAtDeath,
    /// `Dfsm::restart` after a LEAVE cleared queue 1.
    QueueLostAtRestart,
}

/// The model of one state's history, carried next to the state (and handed
/// on with it by a resync).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct History {
    /// Ids of the writes this state contains.
    ghost: BTreeSet<u64>,
    /// Key → the last write applied to it (absent: never written).
    last: BTreeMap<String, u64>,
    /// Writes this state's lineage lost with a queue (and never applied
    /// since), with how.
    dropped: BTreeMap<u64, Dropped>,
    /// Writes applied twice in this lineage (finding 1: a resent queue 1).
    twice: BTreeSet<u64>,
}

/// A NORMAL message: (sender, message count).
type Msg = (MemberId, u64);

/// What the simulator and every node's wrapper share.
#[derive(Default)]
struct Shared {
    /// (sender, NORMAL count) → write id of every client message and of
    /// every re-send of one (`Sim::multicast`).
    ids: HashMap<Msg, u64>,
    /// Write id → the write.
    ops: HashMap<u64, WriteOp>,
    /// STATE blobs sent: (member, blob) → the history of that state and its
    /// fingerprint (what a resync from this member must produce).
    states: HashMap<(MemberId, Vec<u8>), (History, Vec<u8>)>,
}

impl Shared {
    /// What a store with history `hist` must hold for `key`.
    fn expected(&self, hist: &History, key: &str) -> Val {
        match hist.last.get(key) {
            None => Val::Absent,
            Some(id) => match self.ops[id].kind {
                Kind::Set => Val::Id(*id),
                Kind::Delete => Val::Absent,
                Kind::Create => Val::Empty,
            },
        }
    }

    fn write_id(&self, sender: MemberId, msg: &Message) -> Option<u64> {
        match msg.body {
            MessageBody::Normal { count, .. } => self.ids.get(&(sender, count)).copied(),
            _ => None,
        }
    }
}

/// The application under test: the toy or the real DCDB on a store session
/// (which dies with the process: dropped, not closed).
enum Inner {
    Kv(KvApp),
    Db(Box<Dcdb<'static, 'static>>),
}

macro_rules! inner {
    ($self:expr, $app:ident => $body:expr) => {
        match $self {
            Inner::Kv($app) => $body,
            Inner::Db($app) => $body,
        }
    };
}

impl Inner {
    fn quorate(&self) -> bool {
        match self {
            Inner::Kv(app) => app.quorate,
            Inner::Db(app) => app.is_quorate(),
        }
    }

    fn set_quorate(&mut self, quorate: bool) {
        match self {
            Inner::Kv(app) => app.quorate = quorate,
            Inner::Db(app) => app.set_quorate(quorate),
        }
    }

    /// What the store holds for `key`, read back from the store.
    fn value(&self, key: &str) -> Val {
        match self {
            Inner::Kv(app) => app
                .store
                .entries
                .get(key)
                .map_or(Val::Absent, |e| Val::Id(id_of(&e.value))),
            Inner::Db(app) => {
                let reader = app.session().reader();
                match reader
                    .resolve(key_path(key).as_bytes())
                    .expect("read the store")
                {
                    None => Val::Absent,
                    Some(entry) if entry.data.is_empty() => Val::Empty,
                    Some(entry) => Val::Id(
                        std::str::from_utf8(entry.data)
                            .ok()
                            .and_then(|text| text.parse().ok())
                            .unwrap_or_else(|| panic!("{key}: content {:?}", entry.data)),
                    ),
                }
            }
        }
    }

    fn values(&self) -> BTreeMap<String, Val> {
        KEYS.iter()
            .map(|k| (k.to_string(), self.value(k)))
            .collect()
    }

    /// The whole state: index blob and checksum.
    fn fingerprint(&self) -> Vec<u8> {
        match self {
            Inner::Kv(app) => {
                let mut out = app.store.index();
                out.extend_from_slice(&app.store.checksum());
                out
            }
            Inner::Db(app) => {
                let reader = app.session().reader();
                let mut out = reader.index().expect("index");
                out.extend_from_slice(&reader.checksum().expect("checksum"));
                out
            }
        }
    }
}

impl Application for Inner {
    fn deliver(
        &mut self,
        ctx: &mut Ctx<'_>,
        sender: MemberId,
        subtype: u16,
        time: u32,
        payload: &[u8],
    ) -> Result<i32, AppError> {
        inner!(self, app => app.deliver(ctx, sender, subtype, time, payload))
    }

    fn get_state(&mut self, ctx: &mut Ctx<'_>) -> Result<Vec<u8>, AppError> {
        inner!(self, app => app.get_state(ctx))
    }

    fn process_state_update(
        &mut self,
        ctx: &mut Ctx<'_>,
        states: &[(MemberId, &[u8])],
    ) -> Result<StateDecision, AppError> {
        inner!(self, app => app.process_state_update(ctx, states))
    }

    fn process_update(
        &mut self,
        ctx: &mut Ctx<'_>,
        sender: MemberId,
        payload: &[u8],
    ) -> Result<(), AppError> {
        inner!(self, app => app.process_update(ctx, sender, payload))
    }

    fn commit(&mut self, ctx: &mut Ctx<'_>) -> Result<(), AppError> {
        inner!(self, app => app.commit(ctx))
    }

    fn cleanup(&mut self) {
        inner!(self, app => app.cleanup())
    }

    fn checksum(&mut self) -> Option<Result<[u8; 32], AppError>> {
        inner!(self, app => app.checksum())
    }

    fn synced(&mut self, ctx: &mut Ctx<'_>) {
        inner!(self, app => app.synced(ctx))
    }

    fn confchg(&mut self, ctx: &mut Ctx<'_>, members: &[MemberId]) {
        inner!(self, app => app.confchg(ctx, members))
    }

    fn write_footprint(&mut self, subtype: u16, payload: &[u8]) -> Option<Footprint> {
        inner!(self, app => app.write_footprint(subtype, payload))
    }
}

/// A resync that dropped writes from this node's history.
struct Erased {
    leader: MemberId,
    /// This node's history before the resync.
    before: History,
    /// The leader's history, adopted.
    after: History,
}

/// An effective write, as the application log records it.
struct Applied {
    id: u64,
    /// The message that carried it.
    msg: Msg,
    /// The write whose value it replaced.
    prev: Option<u64>,
    /// The value it replaced.
    before: Val,
    /// The history held it already (finding 1's resend of queue 1, or a
    /// re-send of write safety's own-delivery check).
    again: bool,
}

/// Observations the simulation drains after every input.
#[derive(Default)]
struct AppLog {
    /// Every effective write, in order.
    applied: Vec<Applied>,
    /// Every write the application processed (effective or not): its id
    /// and the message (sender, count) that carried it.
    processed: Vec<(u64, Msg)>,
    /// Writes processed without effect: id, message, the key's last write.
    no_effect: Vec<(u64, Msg, Option<u64>)>,
    erased: Vec<Erased>,
    /// Resyncs committed.
    resyncs: u64,
    /// Store and model disagree (the run fails).
    errors: Vec<String>,
}

/// Ground truth around the application: logs what it applied, keeps the
/// model of its history and checks the store against it.
struct Tracked {
    inner: Inner,
    hist: History,
    shared: Rc<RefCell<Shared>>,
    log: AppLog,
    /// The leader of the current state exchange and its STATE blob.
    leader: Option<(MemberId, Vec<u8>)>,
    /// `Inner::fingerprint` since the last change (hashing the real store
    /// for every check is slow in debug builds).
    fingerprint: RefCell<Option<Vec<u8>>>,
}

impl Tracked {
    fn new(inner: Inner, hist: History, shared: Rc<RefCell<Shared>>) -> Self {
        Tracked {
            inner,
            hist,
            shared,
            log: AppLog::default(),
            leader: None,
            fingerprint: RefCell::default(),
        }
    }

    fn fingerprint(&self) -> Vec<u8> {
        self.fingerprint
            .borrow_mut()
            .get_or_insert_with(|| self.inner.fingerprint())
            .clone()
    }

    fn check(&mut self, key: &str, when: &str) {
        let want = self.shared.borrow().expected(&self.hist, key);
        let have = self.inner.value(key);
        if want != have {
            self.log.errors.push(format!(
                "{when}: the store holds {have:?} for key {key}, its history says {want:?}"
            ));
        }
    }

    fn check_all(&mut self, when: &str) {
        for key in KEYS {
            self.check(key, when);
        }
    }

    fn note_dropped(&mut self, ids: impl IntoIterator<Item = u64>, how: Dropped) {
        for id in ids {
            if !self.hist.ghost.contains(&id) {
                self.hist.dropped.entry(id).or_insert(how);
            }
        }
    }
}

impl Application for Tracked {
    fn deliver(
        &mut self,
        ctx: &mut Ctx<'_>,
        sender: MemberId,
        subtype: u16,
        time: u32,
        payload: &[u8],
    ) -> Result<i32, AppError> {
        let count = ctx.message_count().unwrap_or(0);
        let op = {
            let shared = self.shared.borrow();
            let id = shared.ids.get(&(sender, count));
            id.map(|id| shared.ops[id].clone())
        };
        let carried = write_of(matches!(self.inner, Inner::Db(_)), subtype, payload);
        if let Some(op) = &op
            && carried != Some(op.id)
        {
            self.log.errors.push(format!(
                "NORMAL #{count} of {sender} is write {} but carries {carried:?}",
                op.id
            ));
        }
        let Some(op) = op else {
            self.log.errors.push(format!(
                "NORMAL #{:?} of {sender} is no write of the simulation",
                ctx.message_count()
            ));
            self.fingerprint.take();
            return self.inner.deliver(ctx, sender, subtype, time, payload);
        };
        self.check(&op.key, "before a write");
        let before = self.shared.borrow().expected(&self.hist, &op.key);
        self.fingerprint.take();
        let result = match self.inner.deliver(ctx, sender, subtype, time, payload) {
            Ok(result) => result,
            Err(error) => {
                self.check(&op.key, &format!("after write {} failed", op.id));
                return Err(error);
            }
        };
        self.log.processed.push((op.id, (sender, count)));
        if result < 0 {
            let last = self.hist.last.get(&op.key).copied();
            self.log.no_effect.push((op.id, (sender, count), last));
        }
        if result >= 0 {
            let prev = self.hist.last.insert(op.key.clone(), op.id);
            let again = !self.hist.ghost.insert(op.id);
            if again {
                self.hist.twice.insert(op.id);
            }
            self.hist.dropped.remove(&op.id);
            self.log.applied.push(Applied {
                id: op.id,
                msg: (sender, count),
                prev,
                before,
                again,
            });
        }
        self.check(
            &op.key,
            &format!("after write {} ({:?}, result {result})", op.id, op.kind),
        );
        Ok(result)
    }

    fn get_state(&mut self, ctx: &mut Ctx<'_>) -> Result<Vec<u8>, AppError> {
        let blob = self.inner.get_state(ctx)?;
        let fingerprint = self.fingerprint();
        self.shared.borrow_mut().states.insert(
            (ctx.local(), blob.clone()),
            (self.hist.clone(), fingerprint),
        );
        Ok(blob)
    }

    fn process_state_update(
        &mut self,
        ctx: &mut Ctx<'_>,
        states: &[(MemberId, &[u8])],
    ) -> Result<StateDecision, AppError> {
        let decision = self.inner.process_state_update(ctx, states)?;
        // The leader is the first member with the leader's state (selection
        // keeps the earliest of equal candidates).
        self.leader = decision
            .synced
            .iter()
            .position(|&synced| synced)
            .map(|i| (states[i].0, states[i].1.to_vec()));
        Ok(decision)
    }

    fn process_update(
        &mut self,
        ctx: &mut Ctx<'_>,
        sender: MemberId,
        payload: &[u8],
    ) -> Result<(), AppError> {
        self.inner.process_update(ctx, sender, payload)
    }

    fn commit(&mut self, ctx: &mut Ctx<'_>) -> Result<(), AppError> {
        self.fingerprint.take();
        self.inner.commit(ctx)?;
        let Some((leader, blob)) = self.leader.clone() else {
            self.log
                .errors
                .push("resync committed without a leader".into());
            return Ok(());
        };
        let theirs = self.shared.borrow().states.get(&(leader, blob)).cloned();
        let Some((theirs, fingerprint)) = theirs else {
            self.log
                .errors
                .push(format!("resync from {leader}: its state was never sent"));
            return Ok(());
        };
        self.log.resyncs += 1;
        let before = std::mem::replace(&mut self.hist, theirs);
        if !before.ghost.is_subset(&self.hist.ghost) {
            self.log.erased.push(Erased {
                leader,
                before,
                after: self.hist.clone(),
            });
        }
        // Read back: the store must now be the leader's state.
        if self.inner.fingerprint() != fingerprint {
            self.log.errors.push(format!(
                "after the resync from {leader} the store is not the leader's state: {:?}",
                self.inner.values()
            ));
        }
        self.check_all(&format!("after the resync from {leader}"));
        Ok(())
    }

    fn cleanup(&mut self) {
        self.inner.cleanup();
        self.leader = None;
    }

    fn checksum(&mut self) -> Option<Result<[u8; 32], AppError>> {
        self.inner.checksum()
    }

    fn synced(&mut self, ctx: &mut Ctx<'_>) {
        self.inner.synced(ctx);
    }

    fn confchg(&mut self, ctx: &mut Ctx<'_>, members: &[MemberId]) {
        self.inner.confchg(ctx, members);
    }

    fn write_footprint(&mut self, subtype: u16, payload: &[u8]) -> Option<Footprint> {
        self.inner.write_footprint(subtype, payload)
    }
}

// ---------------------------------------------------------------------------
// The simulated cluster

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    /// Clients write only on SYNCED members.
    Gated,
    /// Clients write on any member (like pmxcfs, which gates only on quorum).
    Ungated,
    /// All-Rust cluster: write safety on every member (`Dfsm::set_write_safety`),
    /// clients wait for `Dfsm::write_gate`. No acknowledged write may be lost.
    Strict,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum WriteStatus {
    Pending,
    /// Answered with this result (≥ 0: the write was applied).
    Acked(i32),
    Failed(i32),
    /// The writer's process died before the answer.
    Orphaned,
}

#[derive(Clone, Debug)]
struct WriteRec {
    op: WriteOp,
    node: usize,
    /// The process that sent it (the only one that may re-send it).
    sender: MemberId,
    /// `Sim::event` when it was sent.
    sent_event: u64,
    status: WriteStatus,
    ack_step: u64,
}

struct Proc {
    dfsm: Dfsm<Tracked>,
    /// In the CPG group.
    joined: bool,
    /// Last member list seen (to compute the joined list).
    view: Vec<MemberId>,
    leave_at: Option<u64>,
    restart_at: Option<u64>,
    waiters: BTreeMap<u64, usize>,
}

/// A node's persistent state.
enum Disk {
    Kv(KvStore),
    /// The real store (its journal and LMDB files).
    Db(&'static Store),
}

struct Node {
    node_id: u32,
    up: bool,
    proc: Option<Proc>,
    disk: Disk,
    /// The history of the persistent state while no process runs.
    hist: History,
    /// The fingerprint the last process left at its death (the next one must
    /// start from exactly this).
    left: Option<Vec<u8>>,
    /// Checkpoint interval of the real store (journal records).
    checkpoint_every: u64,
    /// Why its process last went to LEAVE mode on its own.
    left_why: Option<LeaveWhy>,
    respawn_at: Option<u64>,
    skew: i64,
    /// Ids of the writes applied (NORMAL) on this node, with the step.
    applied: BTreeMap<u64, u64>,
    /// Ids of the writes its application processed (also no-op deletes).
    processed: BTreeSet<u64>,
    /// The messages that carried them.
    processed_msgs: BTreeSet<Msg>,
    /// Step at which this node's process last died (crash or kill).
    last_death: u64,
}

#[derive(Default)]
struct Part {
    nodes: BTreeSet<usize>,
    config: Vec<MemberId>,
    pending: VecDeque<(MemberId, Message)>,
}

/// Why a member left the group on its own (it went to LEAVE mode while the
/// others still counted it as a member).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum LeaveWhy {
    /// One of its multicasts failed.
    SendFailed,
    /// Its checksum differed in a VERIFY round.
    VerifyMismatch,
    /// A write was delivered while its node was not quorate.
    WriteWithoutQuorum,
    /// A state message of a sync round failed (e.g. the commit).
    SyncFailed,
}

/// The first application of a write anywhere.
struct FirstApply {
    /// The input (delivery or confchg) that applied it.
    event: u64,
    /// Nodes that applied it in that input.
    holders: BTreeSet<usize>,
    /// Processes in the CPG group (of its partition) at that input.
    group: usize,
    /// Mode (and why it left, if it did) of every other group member after
    /// that input (deliveries only).
    others: Vec<(Mode, Option<LeaveWhy>)>,
    /// Other group members processed it in that input without effect (their
    /// state differed), after finding 1 had made SYNCED members diverge.
    diverged: bool,
}

/// The event that began a fork (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Cause {
    /// Finding 2a: one branch's lineage lost a write of the other with a
    /// queue (discarded at a confchg during UPDATE, or with the process).
    Queue(Dropped),
    /// Finding 2b: the first write of one branch was first applied by a CPG
    /// group of at most half of the nodes (quorum counts nodes).
    MinorityGroup,
    /// Finding 1: a write of an unsynced sender, applied by the SYNCED
    /// members at once and by the others after queue 2, is on one branch.
    UnsyncedSender,
    /// Finding 2c: the first write of one branch reached at most half of the
    /// nodes because the other members of its group had left on their own
    /// (LEAVE mode) and stopped applying while the senders still counted
    /// them, until their confchg.
    LeftOnItsOwn(LeaveWhy),
}

/// The state a writer checked an erased own-delivery write of it against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// The state holds the write.
    Held,
    /// It lacks it; the write its key holds (none: never written).
    Lacked(Option<u64>),
}

/// Why an own-delivery write that a resync erased is not in the settled
/// state, although write safety re-sends such writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WindowLoss {
    /// When its writer checked it, the key's value came from a write first
    /// applied after this one was sent (concurrent: it may come later); the
    /// DFSM does not re-send a write whose key the majority changed since.
    Superseded,
    /// Its writer's process died before it checked the write after the
    /// erasure, or before its re-send reached a majority (the list of own
    /// writes is in memory).
    WriterDied,
    /// Never applied on its writer, whose client was answered that it
    /// failed (the others applied it in a transitional delivery).
    Unacknowledged,
    /// Finding W2 (module docs): the key held an older own-delivery write of
    /// another branch that won a resync.
    WindowWon,
    /// Finding W4 (module docs).
    OwnChain,
}

/// A resync that erased writes from a history.
struct Erasure {
    node: usize,
    step: u64,
    leader: MemberId,
    /// Writes the receiver had and the leader lacked.
    erased: BTreeSet<u64>,
    /// Writes the leader had and the receiver lacked.
    extra: BTreeSet<u64>,
    /// What the receiver's and the leader's lineages lost with a queue.
    dropped_here: BTreeMap<u64, Dropped>,
    dropped_there: BTreeMap<u64, Dropped>,
    /// Writes the leader's lineage applied twice.
    twice_there: BTreeSet<u64>,
    cause: Option<Cause>,
}

#[derive(Default, Debug, Clone)]
struct Stats {
    steps: u64,
    delivered: u64,
    confchgs: u64,
    writes_acked: u64,
    /// Acknowledged writes of runs under the C policies.
    writes_acked_c: u64,
    writes_failed: u64,
    leaves: u64,
    quirk_unsynced_live: u64,
    update_queue_discards: u64,
    erased_writes: u64,
    /// Resyncs that erased writes, by cause.
    erasures: BTreeMap<String, u64>,
    lost_writes_c: u64,
    /// Lost acknowledged writes, by the cause of the resync that erased them.
    lost_by_cause: BTreeMap<String, u64>,
    lost_all_holders_died: u64,
    phantom_writes: u64,
    /// Seeds run with extended virtual synchrony (`DFSM_SIM_EVS`).
    runs_evs: u64,
    /// Messages of writes first applied by a minority in a transitional
    /// delivery (the own-delivery window).
    window_writes: u64,
    /// Own-delivery writes erased by a resync (write safety; per node).
    erased_window: u64,
    /// Writes the DFSM re-sent (write safety's own-delivery check).
    resent: u64,
    /// Erased own-delivery writes not back when settled, by why that is
    /// accepted (`WindowLoss`) ...
    window_lost: BTreeMap<String, u64>,
    /// ... and those of them that had been acknowledged.
    lost_acked_window: BTreeMap<String, u64>,
    /// Re-sends of a write the agreed state held, its key back at the value
    /// before it (the own-delivery check's ABA case) ...
    aba_resends: u64,
    /// ... queue-1 resends of messages applied in a transitional delivery
    /// ...
    queue_resends: u64,
    /// ... and the acknowledged writes they undid (lost), by which.
    lost_undone: BTreeMap<String, u64>,
    /// Writes applied again where the key still held their value.
    repeats: u64,
    /// Erased stale copies of former own-delivery writes a majority holds.
    stale_erasures: u64,
    /// Resyncs that erased writes a majority applied, for a branch ahead by
    /// own-delivery writes ...
    window_wins: u64,
    /// ... and the acknowledged writes lost with them.
    lost_window_wins: u64,
    runs_gated: u64,
    runs_ungated: u64,
    runs_strict: u64,
    runs_with_quirk: u64,
    runs_dcdb: u64,
    writes_acked_dcdb: u64,
    /// Resyncs committed (all runs, and those on real stores).
    resyncs: u64,
    resyncs_dcdb: u64,
    diverged_synced: u64,
    verify_rounds: u64,
    verify_repairs: u64,
    send_failures: u64,
    settles: u64,
    probes: u64,
    max_settle_steps: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.steps += o.steps;
        self.delivered += o.delivered;
        self.confchgs += o.confchgs;
        self.writes_acked += o.writes_acked;
        self.writes_acked_c += o.writes_acked_c;
        self.writes_failed += o.writes_failed;
        self.leaves += o.leaves;
        self.quirk_unsynced_live += o.quirk_unsynced_live;
        self.update_queue_discards += o.update_queue_discards;
        self.erased_writes += o.erased_writes;
        for (k, v) in &o.erasures {
            *self.erasures.entry(k.clone()).or_default() += v;
        }
        self.lost_writes_c += o.lost_writes_c;
        for (k, v) in &o.lost_by_cause {
            *self.lost_by_cause.entry(k.clone()).or_default() += v;
        }
        self.lost_all_holders_died += o.lost_all_holders_died;
        self.phantom_writes += o.phantom_writes;
        self.runs_evs += o.runs_evs;
        self.window_writes += o.window_writes;
        self.erased_window += o.erased_window;
        self.resent += o.resent;
        self.aba_resends += o.aba_resends;
        self.queue_resends += o.queue_resends;
        for (k, v) in &o.lost_undone {
            *self.lost_undone.entry(k.clone()).or_default() += v;
        }
        self.repeats += o.repeats;
        self.stale_erasures += o.stale_erasures;
        self.window_wins += o.window_wins;
        self.lost_window_wins += o.lost_window_wins;
        for (k, v) in &o.window_lost {
            *self.window_lost.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.lost_acked_window {
            *self.lost_acked_window.entry(k.clone()).or_default() += v;
        }
        self.runs_gated += o.runs_gated;
        self.runs_ungated += o.runs_ungated;
        self.runs_strict += o.runs_strict;
        self.runs_with_quirk += o.runs_with_quirk;
        self.runs_dcdb += o.runs_dcdb;
        self.writes_acked_dcdb += o.writes_acked_dcdb;
        self.resyncs += o.resyncs;
        self.resyncs_dcdb += o.resyncs_dcdb;
        self.diverged_synced += o.diverged_synced;
        self.verify_rounds += o.verify_rounds;
        self.verify_repairs += o.verify_repairs;
        self.send_failures += o.send_failures;
        self.settles += o.settles;
        self.probes += o.probes;
        self.max_settle_steps = self.max_settle_steps.max(o.max_settle_steps);
    }
}

const SETTLE_BOUND: u64 = 5_000;
/// Salt of the seed's generator.
const SEED_SALT: u64 = 0x005E_ED0F_DF5A;

/// Number of nodes of a seed (the first draw of its generator).
fn node_count(seed: u64) -> usize {
    Rng(seed ^ SEED_SALT).range(2, 5) as usize
}

/// `DFSM_SIM_STRICT=1`: no finding is accepted (module docs).
fn strict_findings() -> bool {
    std::env::var("DFSM_SIM_STRICT").is_ok_and(|v| v != "0")
}

/// Does this seed's CPG model have extended virtual synchrony's
/// transitional delivery (module docs)? `DFSM_SIM_EVS=1|0` for every seed,
/// else three of four seeds of the write-safe policy (not `seed % 4 == 2`:
/// the DCDB's seeds have it).
fn evs_on(seed: u64, policy: Policy) -> bool {
    match std::env::var("DFSM_SIM_EVS") {
        Ok(v) => v != "0",
        Err(_) => policy == Policy::Strict && seed % 4 != 2,
    }
}

/// Does this seed run the real DCDB application (module docs)?
fn real_dcdb(seed: u64) -> bool {
    match std::env::var("DFSM_SIM_APP").as_deref() {
        Ok("dcdb") => true,
        Ok("kv") => false,
        _ => {
            let every: u64 = std::env::var("DFSM_SIM_DCDB_EVERY")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(4);
            every != 0 && seed % every == every - 1
        }
    }
}

/// A temporary directory for the stores, in memory when possible (LMDB
/// syncs its checkpoints).
fn store_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new().prefix("dfsm-sim-").tempdir_in(shm)
    {
        return dir;
    }
    tempfile::Builder::new()
        .prefix("dfsm-sim-")
        .tempdir()
        .expect("temporary directory")
}

struct Sim {
    seed: u64,
    rng: Rng,
    policy: Policy,
    trace: bool,
    /// The real DCDB application runs on every node.
    dcdb: bool,
    nodes: Vec<Node>,
    parts: Vec<Part>,
    step: u64,
    /// Counts the inputs that can apply writes (deliveries, confchgs).
    event: u64,
    clock: u32,
    next_pid: u32,
    next_write: u64,
    shared: Rc<RefCell<Shared>>,
    writes: Vec<WriteRec>,
    /// Write id → index in `writes`.
    write_idx: BTreeMap<u64, usize>,
    /// Resyncs that erased writes, in order.
    erasures: Vec<Erasure>,
    /// Erasures whose cause has been checked.
    erasures_checked: usize,
    /// Write id → the erasures that erased it.
    erased: BTreeMap<u64, Vec<usize>>,
    /// a → {b}: some node applied b while its value of the key came from a.
    overwrites: BTreeMap<u64, BTreeSet<u64>>,
    /// Writes discarded from some member's queue 2 by a confchg.
    discarded_q2: BTreeSet<u64>,
    /// Writes some process lost with a queue (and how, the first way).
    queue_lost: BTreeMap<u64, Dropped>,
    /// A SYNCED member applied an unsynced sender's message (finding 1).
    quirk_seen: bool,
    /// The writes of finding 1.
    quirk_writes: BTreeSet<u64>,
    /// Writes applied while fewer than a majority of the nodes were really
    /// SYNCED, because a member that had failed on its own (LEAVE after a
    /// failed send) was still counted as synced by the others.
    phantom: BTreeSet<u64>,
    /// (node, write id, message) processed during the current delivery.
    step_processed: Vec<(usize, u64, Msg)>,
    /// Messages some node has processed.
    ever_processed: BTreeSet<Msg>,
    /// Extended virtual synchrony: a split lets each side deliver some of
    /// its pending messages to itself before its confchg (module docs).
    evs: bool,
    /// Such a transitional delivery is under way.
    transitional: bool,
    /// Own-delivery writes: their last first application (of the write or
    /// of a re-send of it) was by at most half of the nodes, in a
    /// transitional delivery.
    window: BTreeSet<u64>,
    /// Writes that ever were own-delivery writes.
    ever_window: BTreeSet<u64>,
    /// Re-sent writes whose re-send their writer processed without effect
    /// (e.g. a CREATE of a file that exists), and the write its key held.
    resend_no_effect: BTreeMap<u64, Option<u64>>,
    /// Write id → the re-sends of it (step, message).
    resends: BTreeMap<u64, Vec<(u64, Msg)>>,
    /// Resyncs that erased own-delivery writes (write safety): (node,
    /// write id, step), checked at the next settle (`check_window_erasures`).
    window_erased: Vec<(usize, u64, u64)>,
    window_erased_checked: usize,
    /// Erased own-delivery writes missing from the settled state, and why
    /// that is accepted.
    window_lost: BTreeMap<u64, WindowLoss>,
    /// `window_erased` index → what the writer's state was at its first
    /// check after it (`writer_synced`).
    window_checks: BTreeMap<usize, Check>,
    /// The policy was forced or named (the replay needs it named).
    policy_named: bool,
    /// Write id → the value it replaced on its writer.
    before_on_writer: BTreeMap<u64, Val>,
    /// Write id → the write whose value it replaced on its writer.
    prev_on_writer: BTreeMap<u64, Option<u64>>,
    /// Repeats accepted as findings (`applied_again`): (write, the write
    /// it undid).
    again: BTreeSet<(u64, Option<u64>)>,
    /// Writes such a repeat undid, and which finding.
    undone: BTreeMap<u64, &'static str>,
    /// Messages first processed in a transitional delivery.
    transitional_msgs: BTreeSet<Msg>,
    /// Re-sends of writes the sender's state held: ABA (`note_resend`)?
    resend_held: BTreeMap<Msg, bool>,
    /// Re-sends of one check (sender, step): ABA?
    resend_batches: BTreeMap<(MemberId, u64), bool>,
    /// Writes a majority applied that a resync erased for a branch ahead by
    /// own-delivery writes (module docs).
    window_wins_erased: BTreeSet<u64>,
    /// Where each write was first applied.
    first_applied: BTreeMap<u64, FirstApply>,
    /// Writes first applied by the current input.
    fresh: Vec<u64>,
    /// Lost acknowledged writes already counted.
    lost: BTreeSet<u64>,
    settling: bool,
    stats: Stats,
}

impl Sim {
    /// A new cluster; `stores` (one per node, `node_count(seed)`) makes it
    /// run the real DCDB application, none the toy.
    fn new(seed: u64, trace: bool, forced: Option<Policy>, stores: &[&'static Store]) -> Self {
        let mut rng = Rng(seed ^ SEED_SALT);
        let n = rng.range(2, 5) as usize;
        let dcdb = !stores.is_empty();
        assert!(!dcdb || stores.len() == n, "one store per node");
        // Distinct node ids, not necessarily in ascending node order.
        let mut ids: Vec<u32> = (1..=9).collect();
        for i in (1..ids.len()).rev() {
            let j = rng.index(i + 1);
            ids.swap(i, j);
        }
        // A forced or named policy draws nothing from the seed's generator,
        // so `DFSM_SIM_POLICY=strict DFSM_SIM_SEED=n` replays a forced run.
        let policy_named = forced.is_some() || std::env::var("DFSM_SIM_POLICY").is_ok();
        let policy = forced.unwrap_or_else(|| match std::env::var("DFSM_SIM_POLICY").as_deref() {
            Ok("strict") => Policy::Strict,
            Ok("gated") => Policy::Gated,
            Ok("ungated") => Policy::Ungated,
            _ => match rng.below(3) {
                0 => Policy::Ungated,
                1 => Policy::Gated,
                _ => Policy::Strict,
            },
        });
        let mut sim = Sim {
            seed,
            rng,
            policy,
            trace,
            dcdb,
            nodes: Vec::new(),
            parts: vec![Part::default()],
            step: 0,
            event: 0,
            clock: 1_000_000,
            next_pid: 100,
            next_write: 1,
            shared: Rc::default(),
            writes: Vec::new(),
            write_idx: BTreeMap::new(),
            erasures: Vec::new(),
            erasures_checked: 0,
            erased: BTreeMap::new(),
            discarded_q2: BTreeSet::new(),
            queue_lost: BTreeMap::new(),
            overwrites: BTreeMap::new(),
            quirk_seen: false,
            quirk_writes: BTreeSet::new(),
            phantom: BTreeSet::new(),
            step_processed: Vec::new(),
            ever_processed: BTreeSet::new(),
            evs: evs_on(seed, policy),
            transitional: false,
            window: BTreeSet::new(),
            ever_window: BTreeSet::new(),
            resend_no_effect: BTreeMap::new(),
            resends: BTreeMap::new(),
            window_erased: Vec::new(),
            window_erased_checked: 0,
            window_lost: BTreeMap::new(),
            window_checks: BTreeMap::new(),
            policy_named,
            before_on_writer: BTreeMap::new(),
            prev_on_writer: BTreeMap::new(),
            again: BTreeSet::new(),
            undone: BTreeMap::new(),
            transitional_msgs: BTreeSet::new(),
            resend_held: BTreeMap::new(),
            resend_batches: BTreeMap::new(),
            window_wins_erased: BTreeSet::new(),
            first_applied: BTreeMap::new(),
            fresh: Vec::new(),
            lost: BTreeSet::new(),
            settling: false,
            stats: Stats::default(),
        };
        for (i, &node_id) in ids.iter().take(n).enumerate() {
            let skew = sim.rng.range(0, 6) as i64 - 3;
            let (disk, checkpoint_every) = match stores.get(i) {
                Some(&store) => (Disk::Db(store), sim.rng.range(1, 64)),
                None => (Disk::Kv(KvStore::default()), 0),
            };
            sim.nodes.push(Node {
                node_id,
                up: false,
                proc: None,
                disk,
                hist: History::default(),
                left: None,
                checkpoint_every,
                left_why: None,
                respawn_at: None,
                skew,
                applied: BTreeMap::new(),
                processed: BTreeSet::new(),
                processed_msgs: BTreeSet::new(),
                last_death: 0,
            });
        }
        // Boot every node one after the other into the single partition.
        for i in 0..n {
            sim.boot(i, Some(0));
        }
        sim.trace(|| {
            format!(
                "seed {seed}: {n} nodes {:?}, policy {policy:?}, {} application, EVS {}",
                sim_ids(&sim),
                if dcdb { "DCDB" } else { "toy" },
                sim.evs
            )
        });
        sim
    }

    fn trace(&self, f: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("[{:5}] {}", self.step, f());
        }
    }

    fn fail(&self, what: &str) -> ! {
        let policy = if self.policy_named {
            format!(
                "DFSM_SIM_POLICY={} ",
                format!("{:?}", self.policy).to_lowercase()
            )
        } else {
            String::new()
        };
        panic!(
            "DFSM simulation failed: seed {} (policy {:?}, {} application, EVS {}, step {}): {what}\n\
             replay: {policy}DFSM_SIM_EVS={} DFSM_SIM_APP={} DFSM_SIM_SEED={} DFSM_SIM_TRACE=1 \
             cargo test -p pmxcfs-cpg --test dfsm_sim dfsm_simulation -- --exact",
            self.seed,
            self.policy,
            if self.dcdb { "DCDB" } else { "toy" },
            self.evs,
            self.step,
            u8::from(self.evs),
            if self.dcdb { "dcdb" } else { "kv" },
            self.seed
        )
    }

    fn now(&self, node: usize) -> u32 {
        (i64::from(self.clock) + self.nodes[node].skew) as u32
    }

    fn node_of(&self, node_id: u32) -> usize {
        self.nodes
            .iter()
            .position(|n| n.node_id == node_id)
            .expect("unknown node id")
    }

    fn part_of(&self, node: usize) -> Option<usize> {
        self.parts.iter().position(|p| p.nodes.contains(&node))
    }

    fn proc_of(&mut self, m: MemberId) -> Option<&mut Proc> {
        let i = self.node_of(m.node_id);
        self.nodes[i].proc.as_mut().filter(|p| p.dfsm.local() == m)
    }

    fn config_of(&self, p: usize) -> Vec<MemberId> {
        let mut c: Vec<MemberId> = self.parts[p]
            .nodes
            .iter()
            .filter_map(|&i| self.nodes[i].proc.as_ref())
            .filter(|pr| pr.joined)
            .map(|pr| pr.dfsm.local())
            .collect();
        c.sort();
        c
    }

    /// Processes in the configuration `node`'s partition delivers to.
    fn group_size(&self, node: usize) -> usize {
        let Some(p) = self.part_of(node) else {
            return 0;
        };
        self.parts[p]
            .config
            .iter()
            .filter(|m| {
                self.nodes
                    .iter()
                    .position(|n| n.node_id == m.node_id)
                    .is_some_and(|i| self.parts[p].nodes.contains(&i))
            })
            .count()
    }

    fn quorate_part(&self, p: usize) -> bool {
        let up = self.parts[p]
            .nodes
            .iter()
            .filter(|&&i| self.nodes[i].up)
            .count();
        up * 2 > self.nodes.len()
    }

    fn update_quorum(&mut self) {
        for p in 0..self.parts.len() {
            let q = self.quorate_part(p);
            let nodes: Vec<usize> = self.parts[p].nodes.iter().copied().collect();
            for i in nodes {
                if let Some(pr) = self.nodes[i].proc.as_mut() {
                    pr.dfsm.app_mut().inner.set_quorate(q);
                }
            }
        }
    }

    /// Some process lost these writes with a queue.
    fn note_queue_lost(&mut self, ids: &[u64], how: Dropped) {
        for &id in ids {
            self.queue_lost.entry(id).or_insert(how);
        }
    }

    fn write_ids(&self, queued: &[pmxcfs_cpg::dfsm::QueuedMessage]) -> Vec<u64> {
        let shared = self.shared.borrow();
        queued
            .iter()
            .filter_map(|q| shared.ids.get(&(q.sender, q.count)).copied())
            .collect()
    }

    // ----- action plumbing ---------------------------------------------

    /// Collects application observations and executes the DFSM's actions.
    fn after_input(&mut self, node: usize) {
        loop {
            let Some(pr) = self.nodes[node].proc.as_mut() else {
                return;
            };
            let log = std::mem::take(&mut pr.dfsm.app_mut().log);
            if let Some(error) = log.errors.first() {
                self.fail(&format!("node {}: {error}", self.nodes[node].node_id));
            }
            for &(id, msg) in &log.processed {
                self.step_processed.push((node, id, msg));
                self.nodes[node].processed.insert(id);
                self.nodes[node].processed_msgs.insert(msg);
            }
            for &(id, msg, last) in &log.no_effect {
                let resent = self
                    .resends
                    .get(&id)
                    .is_some_and(|r| r.iter().any(|&(_, m)| m == msg));
                if resent && self.writes[self.write_idx[&id]].node == node {
                    self.resend_no_effect.insert(id, last);
                }
            }
            let group = self.group_size(node);
            for a in log.applied {
                let id = a.id;
                if self.writes[self.write_idx[&id]].node == node {
                    self.before_on_writer.entry(id).or_insert(a.before);
                    self.prev_on_writer.entry(id).or_insert(a.prev);
                }
                if a.again && self.policy == Policy::Strict {
                    self.applied_again(node, &a);
                }
                if let Some(from) = a.prev {
                    self.overwrites.entry(from).or_default().insert(id);
                }
                self.nodes[node].applied.entry(id).or_insert(self.step);
                let first = self.first_applied.entry(id).or_insert_with(|| {
                    self.fresh.push(id);
                    FirstApply {
                        event: self.event,
                        holders: BTreeSet::new(),
                        group,
                        others: Vec::new(),
                        diverged: false,
                    }
                });
                if first.event == self.event {
                    first.holders.insert(node);
                }
            }
            for r in log.erased {
                self.erasure(node, r);
            }
            self.stats.resyncs += log.resyncs;
            if self.dcdb {
                self.stats.resyncs_dcdb += log.resyncs;
            }
            let pr = self.nodes[node].proc.as_mut().unwrap();
            let Some(action) = pr.dfsm.poll_action() else {
                return;
            };
            let me = pr.dfsm.local();
            match action {
                Action::Multicast(msg) => self.multicast(node, me, msg),
                Action::Leave => {
                    self.stats.leaves += 1;
                    let at = self.step + self.rng.range(0, 4);
                    let pr = self.nodes[node].proc.as_mut().unwrap();
                    if pr.joined && pr.leave_at.is_none() {
                        pr.leave_at = Some(at);
                    }
                    self.trace(|| format!("{me} asks to leave"));
                }
                Action::Result { count, result } => self.write_result(node, count, result),
                Action::ModeChanged(mode) => {
                    self.trace(|| format!("{me} mode {mode:?}"));
                    if mode == Mode::Synced {
                        self.writer_synced(node);
                    }
                }
            }
        }
    }

    /// Write safety: `node` applied a write to a history that held it
    /// already. Accepted where it changes nothing (the key still holds its
    /// value: a repeat of the last write), and, as a write-safety finding
    /// (module docs), the own-delivery check's ABA case: a re-send while
    /// the key was back at the value the write had replaced on its writer,
    /// put there by a later write (`a.prev`), which the re-send undoes.
    fn applied_again(&mut self, node: usize, a: &Applied) {
        let id = a.id;
        if a.prev == Some(id) {
            self.stats.repeats += 1;
            return;
        }
        let resent = self
            .resends
            .get(&id)
            .is_some_and(|r| r.iter().any(|&(_, msg)| msg == a.msg));
        let aba = resent && self.resend_held.get(&a.msg) == Some(&true);
        // C's resend of queue 1 at a join, of a message the other side of a
        // split had applied in a transitional delivery.
        let queue_resend = !resent && self.transitional_msgs.contains(&a.msg);
        if !(aba || queue_resend) || strict_findings() {
            self.fail(&format!(
                "node {} applied write {id} ({}) to a history that held it already, over \
                 write {:?} (the key's value {:?}; the value it replaced on its writer {:?})",
                self.nodes[node].node_id,
                if resent {
                    format!("re-sent: {:?}", self.resends[&id])
                } else {
                    format!("message {:?}", a.msg)
                },
                a.prev,
                a.before,
                self.before_on_writer.get(&id),
            ));
        }
        let what = if aba { "ABA re-send" } else { "queue-1 resend" };
        self.trace(|| {
            format!(
                "{what}: write {id} applied again over write {:?} ({:?}), which it undoes",
                a.prev, a.before
            )
        });
        if self.again.insert((id, a.prev)) {
            if aba {
                self.stats.aba_resends += 1;
            } else {
                self.stats.queue_resends += 1;
            }
            if let Some(undone) = a.prev {
                self.undone.entry(undone).or_insert(what);
            }
        }
    }

    /// Do more than half of the nodes' states (processes, or the disk of a
    /// node without one) hold write `id`?
    fn majority_holds(&self, id: u64) -> bool {
        let holders = self
            .nodes
            .iter()
            .filter(|n| {
                n.proc
                    .as_ref()
                    .map_or(&n.hist, |pr| &pr.dfsm.app().hist)
                    .ghost
                    .contains(&id)
            })
            .count();
        holders * 2 > self.nodes.len()
    }

    /// `node` became SYNCED: in a configuration of more than half of the
    /// nodes, its DFSM checked its unconfirmed own writes against the state
    /// it has now (`Dfsm::check_own_writes`). Noted, for every erasure of
    /// an own-delivery write of this process not checked yet, is whether
    /// that state holds the write, else which write its key holds.
    fn writer_synced(&mut self, node: usize) {
        let Some(pr) = self.nodes[node].proc.as_ref() else {
            return;
        };
        let members: BTreeSet<u32> = pr.view.iter().map(|m| m.node_id).collect();
        if members.len() * 2 <= self.nodes.len() {
            return;
        }
        let me = pr.dfsm.local();
        let hist = &pr.dfsm.app().hist;
        let mut checks = Vec::new();
        for (at, &(_, id, _)) in self.window_erased.iter().enumerate() {
            let rec = &self.writes[self.write_idx[&id]];
            if rec.sender != me || self.window_checks.contains_key(&at) {
                continue;
            }
            checks.push((
                at,
                if hist.ghost.contains(&id) {
                    Check::Held
                } else {
                    Check::Lacked(hist.last.get(&rec.op.key).copied())
                },
            ));
        }
        self.window_checks.extend(checks);
    }

    /// A resync on `node` dropped writes from its history.
    fn erasure(&mut self, node: usize, r: Erased) {
        let erased: BTreeSet<u64> = r.before.ghost.difference(&r.after.ghost).copied().collect();
        let extra: BTreeSet<u64> = r.after.ghost.difference(&r.before.ghost).copied().collect();
        self.stats.erased_writes += erased.len() as u64;
        self.trace(|| {
            format!(
                "node {} erased writes {erased:?} (leader {}, extra {extra:?})",
                self.nodes[node].node_id, r.leader
            )
        });
        if self.policy == Policy::Strict {
            // Write safety: every write a majority applied is in a
            // majority's history, so a resync may drop only own-delivery
            // writes (first applied by a minority in a transitional
            // delivery); their writers must re-send them (checked when
            // settled).
            // A stale copy: the write was an own-delivery write, and its
            // re-send reached a majority, which still holds it.
            let stale: BTreeSet<u64> = erased
                .difference(&self.window)
                .filter(|id| self.ever_window.contains(id) && self.majority_holds(**id))
                .copied()
                .collect();
            self.stats.stale_erasures += stale.len() as u64;
            let other: BTreeSet<u64> = erased
                .difference(&self.window)
                .filter(|id| !stale.contains(id))
                .copied()
                .collect();
            // Finding: the leader's branch is ahead by own-delivery writes
            // (applied by a minority only), and wins over writes a
            // majority applied.
            let ahead: BTreeSet<u64> = extra.intersection(&self.window).copied().collect();
            if !other.is_empty() && !ahead.is_empty() && !strict_findings() {
                self.trace(|| {
                    format!(
                        "window wins: writes {other:?} erased for the own-delivery writes {ahead:?}"
                    )
                });
                self.stats.window_wins += 1;
                self.window_wins_erased.extend(other.iter().copied());
            } else if !other.is_empty() {
                self.fail(&format!(
                    "resync from {} erased writes {other:?} under write safety, not own-delivery \
                     writes (leader's extra writes {extra:?}; re-sends {:?})",
                    r.leader,
                    other
                        .iter()
                        .filter_map(|id| self.resends.get_key_value(id))
                        .collect::<Vec<_>>()
                ));
            }
            for id in erased.intersection(&self.window) {
                self.stats.erased_window += 1;
                self.window_erased.push((node, *id, self.step));
            }
            return;
        }
        if extra.is_empty() && !self.quirk_seen {
            // The leader's history is a strict prefix of ours, yet it
            // won: leader selection or update transfer is broken.
            self.fail(&format!(
                "resync from {} erased writes {erased:?} without a fork",
                r.leader
            ));
        }
        let at = self.erasures.len();
        for &id in &erased {
            self.erased.entry(id).or_default().push(at);
        }
        self.erasures.push(Erasure {
            node,
            step: self.step,
            leader: r.leader,
            erased,
            extra,
            dropped_here: r.before.dropped,
            dropped_there: r.after.dropped,
            twice_there: r.after.twice,
            cause: None,
        });
    }

    fn multicast(&mut self, node: usize, me: MemberId, msg: Message) {
        if let MessageBody::Normal {
            subtype,
            count,
            payload,
        } = &msg.body
            && !self.shared.borrow().ids.contains_key(&(me, *count))
        {
            self.note_resend(node, (me, *count), *subtype, payload);
        }
        let joined = self.nodes[node].proc.as_ref().is_some_and(|p| p.joined);
        // Occasionally the CPG send fails (after the caller's retries).
        let lost = !self.settling && self.rng.chance(1, 300);
        let Some(p) = self.part_of(node).filter(|_| joined && !lost) else {
            self.stats.send_failures += 1;
            let now = self.now(node);
            self.trace(|| format!("{me} send failed {}", self.describe(me, &msg)));
            let dfsm = &mut self.nodes[node].proc.as_mut().unwrap().dfsm;
            let was = dfsm.mode();
            dfsm.on_send_failed(&msg, now);
            if was != Mode::Leave && dfsm.mode() == Mode::Leave {
                self.nodes[node].left_why = Some(LeaveWhy::SendFailed);
            }
            return;
        };
        let pending = &self.parts[p].pending;
        let after = pending
            .iter()
            .rposition(|(s, _)| *s == me)
            .map_or(0, |i| i + 1);
        let pos = after + self.rng.index(pending.len() - after + 1);
        self.parts[p].pending.insert(pos, (me, msg));
    }

    /// The DFSM multicasts a NORMAL message no client sent: it must be a
    /// re-send of a write this process sent (write safety's own-delivery
    /// check, same payload, new count); from now on it counts as that write.
    fn note_resend(&mut self, node: usize, msg: Msg, subtype: u16, payload: &[u8]) {
        let (me, count) = msg;
        let Some(id) = write_of(self.dcdb, subtype, payload) else {
            self.fail(&format!(
                "NORMAL #{count} of {me} is no write of the simulation"
            ));
        };
        let Some(rec) = self.write_idx.get(&id).map(|&w| &self.writes[w]) else {
            self.fail(&format!(
                "NORMAL #{count} of {me} carries unknown write {id}"
            ));
        };
        if rec.sender != me || rec.node != node {
            self.fail(&format!(
                "{me} re-sends write {id} (as #{count}), which {} sent",
                rec.sender
            ));
        }
        let key = rec.op.key.clone();
        self.shared.borrow_mut().ids.insert(msg, id);
        self.resends.entry(id).or_default().push((self.step, msg));
        self.stats.resent += 1;
        // The sender's state is the agreed one it checked. If it holds the
        // write, the re-send is a mistake; the own-delivery check's known
        // ABA case (module docs) when the first write of the batch found its
        // key back at the value it had replaced on its writer.
        let hist = &self.app_of(node).hist;
        if hist.ghost.contains(&id) {
            let now = self.shared.borrow().expected(hist, &key);
            let first = now == self.before_on_writer[&id];
            let aba = *self.resend_batches.entry((me, self.step)).or_insert(first);
            self.resend_held.insert(msg, aba);
            self.trace(|| format!("{me} re-sends write {id} as #{count}, held (ABA: {aba})"));
        } else {
            self.resend_batches.entry((me, self.step)).or_insert(false);
            self.trace(|| format!("{me} re-sends write {id} as #{count}"));
        }
    }

    fn write_result(&mut self, node: usize, count: u64, result: i32) {
        let Some(w) = self.nodes[node]
            .proc
            .as_mut()
            .unwrap()
            .waiters
            .remove(&count)
        else {
            self.fail(&format!(
                "result for unknown count {count} on node {}",
                self.nodes[node].node_id
            ));
        };
        if self.writes[w].status != WriteStatus::Pending {
            self.fail(&format!("second result for write {}", self.writes[w].op.id));
        }
        let rec = &mut self.writes[w];
        let id = rec.op.id;
        if result >= 0 {
            rec.status = WriteStatus::Acked(result);
            rec.ack_step = self.step;
            self.stats.writes_acked += 1;
            if self.policy != Policy::Strict {
                self.stats.writes_acked_c += 1;
            }
            if self.dcdb {
                self.stats.writes_acked_dcdb += 1;
            }
            // An acknowledged write was applied on the writer.
            if !self.nodes[node].applied.contains_key(&id) {
                self.fail(&format!(
                    "write {id} acknowledged but not applied on its node"
                ));
            }
        } else {
            rec.status = WriteStatus::Failed(result);
            self.stats.writes_failed += 1;
        }
        self.trace(|| format!("write {id} result {result}"));
    }

    // ----- CPG ---------------------------------------------------------

    /// Delivers the head of partition `p`'s pending list.
    fn deliver_one(&mut self, p: usize) {
        let Some((sender, msg)) = self.parts[p].pending.pop_front() else {
            return;
        };
        self.stats.delivered += 1;
        self.event += 1;
        self.fresh.clear();
        // A part's config is the configuration its members last saw; after
        // a split (before the confchg) it still names the other side, which
        // does not receive anything any more.
        let members: Vec<MemberId> = self.parts[p]
            .config
            .iter()
            .copied()
            .filter(|m| {
                self.nodes
                    .iter()
                    .position(|n| n.node_id == m.node_id)
                    .is_some_and(|i| self.parts[p].nodes.contains(&i))
            })
            .collect();
        if !self.parts[p].config.contains(&sender) {
            self.fail(&format!(
                "message from non-member {sender} in the pending list"
            ));
        }
        self.trace(|| format!("deliver from {sender}: {}", self.describe(sender, &msg)));
        // Ground truth for finding 1: the sender's own mode at this point of
        // the total order (not the receivers' member tables).
        let sender_syncing = self
            .proc_of(sender)
            .is_some_and(|p| matches!(p.dfsm.mode(), Mode::StartSync | Mode::Update));
        let write_id = self.shared.borrow().write_id(sender, &msg);
        let key = match msg.body {
            MessageBody::Normal { count, .. } => Some((sender, count)),
            _ => None,
        };
        let processed = |sim: &Self, node: usize| {
            key.is_some_and(|key| sim.nodes[node].processed_msgs.contains(&key))
        };
        self.step_processed.clear();
        for &m in &members {
            let node = self.node_of(m.node_id);
            let now = self.now(node);
            let Some(pr) = self.proc_of(m) else { continue };
            let was = pr.dfsm.mode();
            let was_synced = was == Mode::Synced;
            let had = processed(self, node);
            let pr = self.proc_of(m).unwrap();
            pr.dfsm.on_deliver(sender, msg.clone(), now);
            if was != Mode::Leave && pr.dfsm.mode() == Mode::Leave {
                self.nodes[node].left_why = Some(match msg.body {
                    MessageBody::Verify { .. } => LeaveWhy::VerifyMismatch,
                    MessageBody::Normal { .. } => LeaveWhy::WriteWithoutQuorum,
                    _ => LeaveWhy::SyncFailed,
                });
            }
            self.after_input(node);
            let applied_now = !had && processed(self, node);
            if sender_syncing && was_synced && applied_now {
                // Finding 1: a SYNCED member applied a syncing sender's
                // message in CPG order.
                self.quirk_seen = true;
                self.quirk_writes.extend(write_id);
                self.stats.quirk_unsynced_live += 1;
                if self.policy != Policy::Ungated {
                    self.fail(&format!(
                        "SYNCED member {m} applied write {} of the syncing sender {sender} (policy {:?})",
                        write_id.unwrap_or(0),
                        self.policy
                    ));
                }
            }
        }
        self.finish_first_applies(&members);
        // Ground truth for write safety: every write applied in this step
        // (the NORMAL itself, or the held ones an UPDATE_COMPLETE releases)
        // must be applied by more than half of the nodes at once. Fewer
        // means somebody counted a member as synced that was not applying
        // (e.g. it had failed on its own): a "phantom" holder.
        let mut by_msg: BTreeMap<Msg, (u64, BTreeSet<usize>)> = BTreeMap::new();
        for &(node, id, msg) in &self.step_processed {
            by_msg
                .entry(msg)
                .or_insert((id, BTreeSet::new()))
                .1
                .insert(node);
        }
        for (msg, (id, holders)) in by_msg {
            // Only the step that applies a message first (later steps are
            // members catching up from their queues); a re-send is another
            // message.
            if !self.ever_processed.insert(msg) {
                continue;
            }
            if self.transitional {
                self.transitional_msgs.insert(msg);
            }
            if holders.len() * 2 > self.nodes.len() {
                // A majority holds it (again).
                self.window.remove(&id);
            } else if self.transitional {
                // The own-delivery window: a side that turns out to be a
                // minority applied it before its confchg.
                self.stats.window_writes += 1;
                self.window.insert(id);
                self.ever_window.insert(id);
                self.trace(|| {
                    format!(
                        "write {id} applied by a minority {holders:?} in a transitional delivery"
                    )
                });
            } else {
                self.phantom.insert(id);
                self.trace(|| format!("write {id} applied by a minority {holders:?}"));
                if self.policy == Policy::Strict {
                    self.fail(&format!(
                        "write {id} was first applied by a minority of the nodes {holders:?} under write safety"
                    ));
                }
            }
        }
    }

    /// Records how the rest of the group (`members`) stood when the current
    /// input applied writes for the first time.
    fn finish_first_applies(&mut self, members: &[MemberId]) {
        let others: Vec<(usize, Mode, Option<LeaveWhy>)> = members
            .iter()
            .filter_map(|&m| {
                let node = self.node_of(m.node_id);
                let pr = self.nodes[node].proc.as_ref()?;
                Some((node, pr.dfsm.mode(), self.nodes[node].left_why))
            })
            .collect();
        for id in std::mem::take(&mut self.fresh) {
            let first = self.first_applied.get_mut(&id).unwrap();
            // A node that processed it without effect had another state.
            first.diverged = self.quirk_seen
                && self.nodes.iter().enumerate().any(|(node, n)| {
                    !first.holders.contains(&node)
                        && n.processed.contains(&id)
                        && !n.applied.contains_key(&id)
                });
            first.others = others
                .iter()
                .filter(|(node, ..)| !first.holders.contains(node))
                .map(|&(_, mode, why)| (mode, why))
                .collect();
        }
    }

    /// Delivers a random prefix of the pending messages (all of `must`'s).
    fn flush(&mut self, p: usize, must: Option<MemberId>) {
        let n = self.parts[p].pending.len() as u64;
        let k = self.rng.range(0, n);
        for _ in 0..k {
            self.deliver_one(p);
        }
        if let Some(m) = must {
            while self.parts[p].pending.iter().any(|(s, _)| *s == m) {
                self.deliver_one(p);
            }
        }
    }

    /// Recomputes the configuration of `p`; on a change delivers the confchg
    /// to every member (and to `leaver`, which is no member any more).
    fn confchg(&mut self, p: usize, leaver: Option<MemberId>) {
        let new = self.config_of(p);
        if new == self.parts[p].config {
            return;
        }
        self.stats.confchgs += 1;
        self.event += 1;
        self.fresh.clear();
        self.trace(|| {
            format!(
                "confchg part {p}: {:?}",
                new.iter().map(ToString::to_string).collect::<Vec<_>>()
            )
        });
        self.parts[p].config = new.clone();
        self.parts[p].pending.retain(|(s, _)| new.contains(s));
        let mut targets = new.clone();
        targets.extend(leaver);
        // Every confchg discards queue 2 (held at members in UPDATE mode).
        for &m in &targets {
            let pr = self.proc_of(m).unwrap();
            if pr.dfsm.sync_queued().is_empty() {
                continue;
            }
            let queued = pr.dfsm.sync_queued().to_vec();
            let ids = self.write_ids(&queued);
            self.stats.update_queue_discards += 1;
            self.discarded_q2.extend(ids.iter().copied());
            self.note_queue_lost(&ids, Dropped::Queue2Discard);
            self.trace(|| format!("{m} discards queue 2: writes {ids:?}"));
            self.proc_of(m)
                .unwrap()
                .dfsm
                .app_mut()
                .note_dropped(ids, Dropped::Queue2Discard);
        }
        for m in targets {
            let node = self.node_of(m.node_id);
            let now = self.now(node);
            let Some(pr) = self.proc_of(m) else { continue };
            let joined: Vec<MemberId> = if pr.view.is_empty() {
                vec![m]
            } else {
                new.iter()
                    .filter(|x| !pr.view.contains(x))
                    .copied()
                    .collect()
            };
            pr.view = if new.contains(&m) {
                new.clone()
            } else {
                Vec::new()
            };
            pr.dfsm.on_confchg(&new, &joined, now);
            if !pr.dfsm.sync_queued().is_empty() {
                self.fail(&format!("{m} kept its queue 2 over a confchg"));
            }
            self.after_input(node);
        }
        self.finish_first_applies(&new);
    }

    fn new_proc(&mut self, node: usize) -> Proc {
        let pid = self.next_pid;
        self.next_pid += 1;
        let inner = match &self.nodes[node].disk {
            Disk::Kv(store) => Inner::Kv(KvApp::new(store.clone())),
            Disk::Db(store) => {
                // Replays the journal the last process left.
                let (mut session, permit) = store
                    .session(Durability::Relaxed)
                    .unwrap_or_else(|e| self.fail(&format!("store session: {e}")));
                session.set_checkpoint_limits(CheckpointLimits {
                    records_max: self.nodes[node].checkpoint_every,
                    journal_bytes_max: 1 << 20,
                });
                Inner::Db(Box::new(Dcdb::owned(session, permit)))
            }
        };
        let mut app = Tracked::new(
            inner,
            self.nodes[node].hist.clone(),
            Rc::clone(&self.shared),
        );
        // The new process starts from exactly what the last one left.
        if let Some(left) = &self.nodes[node].left
            && app.inner.fingerprint() != *left
        {
            self.fail(&format!(
                "node {}: the restarted process does not see what the dead one left: {:?}",
                self.nodes[node].node_id,
                app.inner.values()
            ));
        }
        app.check_all("at the start of a process");
        if let Some(error) = app.log.errors.first() {
            self.fail(&format!("node {}: {error}", self.nodes[node].node_id));
        }
        let m = MemberId::new(self.nodes[node].node_id, pid);
        let mut dfsm = Dfsm::new(m, PROTOCOL, app);
        if self.policy == Policy::Strict {
            dfsm.set_write_safety(Some(Votes::new(self.nodes.iter().map(|n| (n.node_id, 1)))));
        }
        Proc {
            dfsm,
            joined: true,
            view: Vec::new(),
            leave_at: None,
            restart_at: None,
            waiters: BTreeMap::new(),
        }
    }

    /// Node boots (or its pmxcfs is started again) and joins partition `p`
    /// (a random or new one if `None`).
    fn boot(&mut self, node: usize, p: Option<usize>) {
        self.nodes[node].respawn_at = None;
        let p = match self.part_of(node) {
            Some(p) => p,
            None => {
                let p = match p {
                    Some(p) => p,
                    None if self.rng.chance(1, 4) || self.parts.is_empty() => {
                        self.parts.push(Part::default());
                        self.parts.len() - 1
                    }
                    None => self.rng.index(self.parts.len()),
                };
                self.parts[p].nodes.insert(node);
                p
            }
        };
        self.nodes[node].up = true;
        self.nodes[node].left_why = None;
        let pr = self.new_proc(node);
        let me = pr.dfsm.local();
        self.trace(|| format!("start {me}"));
        self.nodes[node].proc = Some(pr);
        self.update_quorum();
        self.confchg(p, None);
    }

    /// The process on `node` dies (with the node if `node_down`).
    fn kill(&mut self, node: usize, node_down: bool) {
        let Some(p) = self.part_of(node) else { return };
        self.flush(p, None);
        if let Some(pr) = self.nodes[node].proc.take() {
            self.trace(|| {
                format!(
                    "{} {}",
                    if node_down { "crash node of" } else { "kill" },
                    pr.dfsm.local()
                )
            });
            for &w in pr.waiters.values() {
                self.writes[w].status = WriteStatus::Orphaned;
            }
            // Its queues die with it.
            let mut queued = self.write_ids(pr.dfsm.queued());
            queued.extend(self.write_ids(pr.dfsm.sync_queued()));
            self.note_queue_lost(&queued, Dropped::QueueLostAtDeath);
            let mut app = pr.dfsm.into_app();
            app.note_dropped(queued, Dropped::QueueLostAtDeath);
            let node_rec = &mut self.nodes[node];
            node_rec.left = Some(app.fingerprint());
            node_rec.hist = app.hist;
            // The real store's session is dropped, not closed: a crash.
            if let Inner::Kv(kv) = app.inner {
                node_rec.disk = Disk::Kv(kv.store);
            }
            node_rec.last_death = self.step;
        }
        let delay = self.rng.range(3, 60);
        self.nodes[node].respawn_at = Some(self.step + delay);
        if node_down {
            self.nodes[node].up = false;
            self.parts[p].nodes.remove(&node);
        }
        self.update_quorum();
        self.confchg(p, None);
        self.gc_parts();
    }

    fn gc_parts(&mut self) {
        let mut i = 0;
        while i < self.parts.len() {
            if self.parts[i].nodes.is_empty() {
                self.parts.remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// The DFSM asked to leave: `cpg_leave`.
    fn dfsm_leave(&mut self, node: usize) {
        let Some(p) = self.part_of(node) else { return };
        let me = self.nodes[node].proc.as_ref().unwrap().dfsm.local();
        self.flush(p, Some(me));
        let delay = self.rng.range(2, 20);
        let pr = self.nodes[node].proc.as_mut().unwrap();
        pr.joined = false;
        pr.leave_at = None;
        pr.restart_at = Some(self.step + delay);
        self.trace(|| format!("{me} left the group"));
        self.confchg(p, Some(me));
    }

    /// Re-initialisation after the leave.
    fn dfsm_restart(&mut self, node: usize) {
        let now = self.now(node);
        let queued = self.write_ids(self.nodes[node].proc.as_ref().unwrap().dfsm.queued());
        let pr = self.nodes[node].proc.as_mut().unwrap();
        pr.restart_at = None;
        if pr.dfsm.restart(now).is_err() {
            return;
        }
        self.nodes[node].left_why = None;
        self.note_queue_lost(&queued, Dropped::QueueLostAtRestart);
        let pr = self.nodes[node].proc.as_mut().unwrap();
        pr.dfsm
            .app_mut()
            .note_dropped(queued, Dropped::QueueLostAtRestart);
        pr.joined = true;
        pr.view = Vec::new();
        let me = pr.dfsm.local();
        self.after_input(node);
        self.trace(|| format!("{me} rejoins"));
        let p = self.part_of(node).unwrap();
        self.confchg(p, None);
    }

    fn split(&mut self) {
        let candidates: Vec<usize> = (0..self.parts.len())
            .filter(|&p| self.parts[p].nodes.len() >= 2)
            .collect();
        if candidates.is_empty() {
            return;
        }
        let p = candidates[self.rng.index(candidates.len())];
        self.flush(p, None);
        let nodes: Vec<usize> = self.parts[p].nodes.iter().copied().collect();
        let mut side: Vec<bool> = nodes.iter().map(|_| self.rng.chance(1, 2)).collect();
        if side.iter().all(|&s| s) || side.iter().all(|&s| !s) {
            side[0] = !side[0];
        }
        let mut q = Part {
            config: self.parts[p].config.clone(),
            ..Part::default()
        };
        for (i, &n) in nodes.iter().enumerate() {
            if side[i] {
                self.parts[p].nodes.remove(&n);
                q.nodes.insert(n);
            }
        }
        let pending = std::mem::take(&mut self.parts[p].pending);
        for (s, m) in pending {
            if q.nodes.contains(&self.node_of(s.node_id)) {
                q.pending.push_back((s, m));
            } else {
                self.parts[p].pending.push_back((s, m));
            }
        }
        self.trace(|| format!("split part {p}: {:?} | {:?}", self.parts[p].nodes, q.nodes));
        self.parts.push(q);
        let q = self.parts.len() - 1;
        // Extended virtual synchrony (DFSM_SIM_EVS=1): before its confchg,
        // each side may deliver some of its own pending messages in the
        // transitional configuration, i.e. still in the old configuration's
        // view but to its side only (corosync's CPG hides transitional
        // configurations; the other side never gets these messages).
        if self.evs {
            self.transitional = true;
            for side in [p, q] {
                let n = self.parts[side].pending.len() as u64;
                for _ in 0..self.rng.range(0, n) {
                    self.deliver_one(side);
                }
            }
            self.transitional = false;
        }
        self.update_quorum();
        self.confchg(p, None);
        self.confchg(q, None);
    }

    fn heal(&mut self, p: usize, q: usize) {
        self.flush(p, None);
        self.flush(q, None);
        let other = std::mem::take(&mut self.parts[q]);
        let mine = std::mem::take(&mut self.parts[p].pending);
        // Random interleaving, each side's order kept.
        let (mut a, mut b) = (mine, other.pending);
        let mut merged = VecDeque::new();
        while !a.is_empty() || !b.is_empty() {
            let take_a = b.is_empty() || (!a.is_empty() && self.rng.chance(1, 2));
            merged.push_back(if take_a { a.pop_front() } else { b.pop_front() }.unwrap());
        }
        self.parts[p].pending = merged;
        self.parts[p].nodes.extend(other.nodes.iter().copied());
        // The merged part's previous configuration: either side's (what each
        // member saw is in its view; this only decides whether anything
        // changed at all).
        if self.parts[p].config.is_empty() {
            self.parts[p].config = other.config.clone();
        }
        self.parts.remove(q);
        let p = if q < p { p - 1 } else { p };
        self.trace(|| format!("heal into {:?}", self.parts[p].nodes));
        self.update_quorum();
        self.confchg(p, None);
    }

    fn client_write(&mut self, node: usize) {
        let set = self.rng.chance(4, 5);
        self.client_write_op(node, set);
    }

    /// A client sets or deletes a random key on `node`. With the real DCDB
    /// a set of a file the writer's store lacks is a CREATE, then the WRITE.
    fn client_write_op(&mut self, node: usize, set: bool) {
        let key = KEYS[self.rng.index(KEYS.len())].to_string();
        let kinds: &[Kind] = match self.nodes[node].proc.as_ref() {
            None => return,
            Some(_) if !set => &[Kind::Delete],
            Some(pr) if self.dcdb && pr.dfsm.app().inner.value(&key) == Val::Absent => {
                &[Kind::Create, Kind::Set]
            }
            Some(_) => &[Kind::Set],
        };
        for &kind in kinds {
            if !self.client_send(node, &key, kind) {
                return;
            }
        }
    }

    /// One client message; false if the client could not send it.
    fn client_send(&mut self, node: usize, key: &str, kind: Kind) -> bool {
        let Some(pr) = self.nodes[node].proc.as_ref() else {
            return false;
        };
        if !pr.joined {
            return false;
        }
        if self.policy == Policy::Gated && pr.dfsm.mode() != Mode::Synced {
            return false;
        }
        if self.policy == Policy::Strict && pr.dfsm.write_gate() != WriteGate::Open {
            return false; // the writer waits (pmxcfs parks the request)
        }
        if !pr.dfsm.app().inner.quorate() {
            return false; // -EACCES before sending
        }
        let id = self.next_write;
        self.next_write += 1;
        let op = WriteOp {
            id,
            key: key.to_string(),
            kind,
        };
        let (subtype, payload) = if self.dcdb {
            encode_dcdb(&op)
        } else {
            (SUBTYPE_WRITE, encode_write(&op))
        };
        let now = self.now(node);
        let pr = self.nodes[node].proc.as_mut().unwrap();
        let me = pr.dfsm.local();
        // Refused in an error mode: the client gets -EACCES.
        let Ok(count) = pr.dfsm.send_normal(subtype, payload, now) else {
            return false;
        };
        let w = self.writes.len();
        pr.waiters.insert(count, w);
        {
            let mut shared = self.shared.borrow_mut();
            shared.ids.insert((me, count), id);
            shared.ops.insert(id, op.clone());
        }
        self.write_idx.insert(id, w);
        self.writes.push(WriteRec {
            op: op.clone(),
            node,
            sender: me,
            sent_event: self.event,
            status: WriteStatus::Pending,
            ack_step: 0,
        });
        self.trace(|| {
            format!(
                "client write {id} {:?} {} on {me} (count {count})",
                op.kind, op.key
            )
        });
        self.after_input(node);
        true
    }

    fn verify(&mut self, node: usize) {
        let now = self.now(node);
        let Some(pr) = self.nodes[node].proc.as_mut() else {
            return;
        };
        if pr.dfsm.request_verify(now) {
            self.stats.verify_rounds += 1;
            self.after_input(node);
        }
    }

    /// Leaves, restarts and respawns that are due.
    fn scheduled(&mut self) {
        for i in 0..self.nodes.len() {
            let due = |t: Option<u64>| t.is_some_and(|t| t <= self.step);
            if due(self.nodes[i].respawn_at) {
                if self.nodes[i].up {
                    self.nodes[i].respawn_at = None;
                    let p = self.part_of(i);
                    self.boot(i, p);
                } else {
                    self.boot(i, None);
                }
                continue;
            }
            let Some(pr) = self.nodes[i].proc.as_ref() else {
                continue;
            };
            if due(pr.leave_at) {
                self.dfsm_leave(i);
            } else if due(pr.restart_at) {
                self.dfsm_restart(i);
            }
        }
    }

    fn random_step(&mut self) {
        self.step += 1;
        self.stats.steps += 1;
        if self.rng.chance(1, 3) {
            self.clock += 1;
        }
        self.scheduled();
        let with_pending: Vec<usize> = (0..self.parts.len())
            .filter(|&p| !self.parts[p].pending.is_empty())
            .collect();
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up)
            .collect();
        let r = self.rng.below(1000);
        match r {
            0..=599 if !with_pending.is_empty() => {
                let p = with_pending[self.rng.index(with_pending.len())];
                self.deliver_one(p);
            }
            600..=849 if !up.is_empty() => {
                let i = up[self.rng.index(up.len())];
                self.client_write(i);
            }
            850..=869 if !up.is_empty() => {
                let i = up[self.rng.index(up.len())];
                self.verify(i);
            }
            870..=889 if !up.is_empty() => {
                let i = up[self.rng.index(up.len())];
                self.kill(i, true);
            }
            890..=909 if !up.is_empty() => {
                let i = up[self.rng.index(up.len())];
                if self.nodes[i].proc.is_some() {
                    self.kill(i, false);
                }
            }
            910..=934 => self.split(),
            935..=969 if self.parts.len() >= 2 => {
                let p = self.rng.index(self.parts.len());
                let mut q = self.rng.index(self.parts.len() - 1);
                if q >= p {
                    q += 1;
                }
                self.heal(p, q);
            }
            _ => {
                if !with_pending.is_empty() {
                    let p = with_pending[self.rng.index(with_pending.len())];
                    self.deliver_one(p);
                }
            }
        }
        self.check_step();
    }

    // ----- invariants --------------------------------------------------

    fn check_step(&mut self) {
        for p in 0..self.parts.len() {
            let config = self.parts[p].config.clone();
            let mut synced: Vec<(MemberId, Vec<u8>)> = Vec::new();
            for m in config {
                let Some(pr) = self.proc_of(m) else {
                    self.fail(&format!("configuration member {m} has no process"));
                };
                if pr.dfsm.mode() == Mode::Synced {
                    synced.push((m, pr.dfsm.app().fingerprint()));
                }
            }
            for w in synced.windows(2) {
                if w[0].1 != w[1].1 {
                    if self.quirk_seen {
                        self.stats.diverged_synced += 1;
                        continue;
                    }
                    let values = |m: MemberId| self.app_of(self.node_of(m.node_id)).inner.values();
                    self.fail(&format!(
                        "SYNCED members {} and {} of one configuration differ:\n{:?}\n{:?}",
                        w[0].0,
                        w[1].0,
                        values(w[0].0),
                        values(w[1].0),
                    ));
                }
            }
        }
    }

    fn app_of(&self, node: usize) -> &Tracked {
        self.nodes[node].proc.as_ref().unwrap().dfsm.app()
    }

    /// Heal, restart, drain; then everything must be SYNCED and identical.
    fn settle(&mut self) {
        self.settling = true;
        self.stats.settles += 1;
        self.trace(|| "settle".to_string());
        let start = self.step;
        loop {
            self.step += 1;
            self.stats.steps += 1;
            if self.step - start > SETTLE_BOUND {
                let modes: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| {
                        format!(
                            "{}: {:?}",
                            n.node_id,
                            n.proc.as_ref().map(|p| (p.dfsm.mode(), p.joined))
                        )
                    })
                    .collect();
                self.fail(&format!(
                    "not settled after {SETTLE_BOUND} steps: {modes:?}"
                ));
            }
            for i in 0..self.nodes.len() {
                if self.nodes[i].respawn_at.is_some() {
                    self.nodes[i].respawn_at = Some(self.step);
                }
            }
            self.scheduled();
            if self.parts.len() >= 2 {
                self.heal(0, 1);
                self.check_step();
                continue;
            }
            if !self.parts[0].pending.is_empty() {
                self.deliver_one(0);
                self.check_step();
                continue;
            }
            let busy = self.nodes.iter().any(|n| {
                !n.up
                    || n.respawn_at.is_some()
                    || n.proc
                        .as_ref()
                        .is_none_or(|p| !p.joined || p.leave_at.is_some() || p.restart_at.is_some())
            });
            if busy {
                self.clock += 1;
                continue;
            }
            let all_synced = self
                .nodes
                .iter()
                .all(|n| n.proc.as_ref().unwrap().dfsm.mode() == Mode::Synced);
            if !all_synced {
                let modes: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| {
                        format!(
                            "{}: {:?}",
                            n.node_id,
                            n.proc.as_ref().map(|p| p.dfsm.mode())
                        )
                    })
                    .collect();
                self.fail(&format!("quiescent but not all SYNCED: {modes:?}"));
            }
            let first = self.app_of(0).fingerprint();
            let identical = (0..self.nodes.len()).all(|i| self.app_of(i).fingerprint() == first);
            if !identical && self.quirk_seen {
                // Finding 1 diverged the members; C repairs that only through
                // a VERIFY round (the mismatching members leave and resync).
                self.stats.verify_repairs += 1;
                let lowest = (0..self.nodes.len())
                    .min_by_key(|&i| self.nodes[i].node_id)
                    .unwrap();
                self.verify(lowest);
                continue;
            }
            break;
        }
        self.stats.max_settle_steps = self.stats.max_settle_steps.max(self.step - start);
        self.check_settled();
        // A verify round must pass without anybody leaving.
        let lowest = (0..self.nodes.len())
            .min_by_key(|&i| self.nodes[i].node_id)
            .unwrap();
        let leaves = self.stats.leaves;
        self.verify(lowest);
        while !self.parts[0].pending.is_empty() {
            self.deliver_one(0);
        }
        if self.stats.leaves != leaves {
            self.fail("a member left during the verify round after settling");
        }
        self.probe_write();
        self.settling = false;
    }

    /// Progress: after settling, a write on the lowest node is sent and
    /// acknowledged (a run in which nothing could ever be written would
    /// otherwise pass every other check).
    fn probe_write(&mut self) {
        let node = (0..self.nodes.len())
            .min_by_key(|&i| self.nodes[i].node_id)
            .unwrap();
        let before = self.writes.len();
        self.client_write_op(node, true);
        if self.writes.len() == before {
            self.fail("no write could be sent after settling");
        }
        while !self.parts[0].pending.is_empty() {
            self.deliver_one(0);
        }
        for w in &self.writes[before..] {
            if !matches!(w.status, WriteStatus::Acked(_)) {
                self.fail(&format!(
                    "write {} after settling not acknowledged: {:?}",
                    w.op.id, w.status
                ));
            }
        }
        self.stats.probes += 1;
    }

    fn check_settled(&mut self) {
        let first = self.app_of(0).fingerprint();
        for n in &self.nodes {
            let pr = n.proc.as_ref().unwrap();
            if pr.dfsm.app().fingerprint() != first {
                self.fail(&format!(
                    "after settling node {} differs:\n{:?}\n{:?}",
                    n.node_id,
                    pr.dfsm.app().inner.values(),
                    self.app_of(0).inner.values()
                ));
            }
            if !pr.waiters.is_empty() || pr.dfsm.waiting().next().is_some() {
                self.fail(&format!(
                    "writer on node {} still waiting after settling",
                    n.node_id
                ));
            }
        }
        if self.writes.iter().any(|w| w.status == WriteStatus::Pending) {
            self.fail("a write is still pending after settling");
        }
        self.explain_erasures();
        self.check_window_erasures();
        let fin = self.app_of(0).inner.values();
        self.check_lost_writes(&fin);
    }

    /// Write safety: every own-delivery write a resync erased since the
    /// last settle is back in the settled state (its writer re-sent it), or
    /// was superseded by a concurrent write of its key (the re-send is
    /// skipped when the majority changed the key: `Dfsm::check_own_writes`),
    /// or its writer's process died (the list of own writes died with it).
    fn check_window_erasures(&mut self) {
        let fin = self.app_of(0).hist.clone();
        for at in self.window_erased_checked..self.window_erased.len() {
            let (node, id, step) = self.window_erased[at];
            if fin.ghost.contains(&id) || self.window_lost.contains_key(&id) {
                continue;
            }
            let rec = &self.writes[self.write_idx[&id]];
            // What its writer checked after the last erasure on its own
            // node (what the others erase later does not change that).
            let last = (0..self.window_erased.len())
                .rev()
                .find(|&i| self.window_erased[i].1 == id && self.window_erased[i].0 == rec.node);
            let check = last.and_then(|i| self.window_checks.get(&i).copied());
            let last_step = last.map_or(step, |i| self.window_erased[i].2);
            // Re-sent since, but the re-send died with its writer.
            let resent_since = self
                .resends
                .get(&id)
                .is_some_and(|r| r.iter().any(|&(at, _)| at >= last_step));
            // The key held a write first applied after this one was sent:
            // concurrent with it, so it may come later.
            let superseded = matches!(check, Some(Check::Lacked(Some(by)))
                if by != id
                    && self
                        .first_applied
                        .get(&by)
                        .is_some_and(|f| f.event > rec.sent_event));
            let writer = &self.nodes[rec.node];
            let writer_died = writer
                .proc
                .as_ref()
                .is_none_or(|pr| pr.dfsm.local() != rec.sender);
            // Its re-send found the key changed by a concurrent write.
            let resend_superseded = matches!(self.resend_no_effect.get(&id), Some(&Some(by))
                if by != id
                    && self
                        .first_applied
                        .get(&by)
                        .is_some_and(|f| f.event > rec.sent_event));
            // Never applied on its writer (answered as failed): nothing to
            // re-send.
            let unacknowledged = !matches!(rec.status, WriteStatus::Acked(_))
                && !self.before_on_writer.contains_key(&id);
            // Finding W2: the key held an older own-delivery write of
            // another branch, which the writer had not seen, and which won.
            let window_won = matches!(check, Some(Check::Lacked(Some(by)))
                if self.ever_window.contains(&by)
                    && self.nodes[rec.node]
                        .applied
                        .get(&by)
                        .is_none_or(|&at| at >= self.nodes[rec.node].applied[&id]));
            // Finding W4: the key was at the value the writer's own earlier
            // write had left, which the check takes for changed back since.
            let own_chain = matches!(check, Some(Check::Lacked(Some(x)))
                if self.prev_on_writer.get(&id) == Some(&Some(x))
                    && self.writes[self.write_idx[&x]].sender == rec.sender);
            // ... or a later own DELETE of the same check found its file
            // gone (the majority deleted it too), which passes for held and
            // with it every earlier write.
            let absent = |check: Option<&Check>| match check {
                Some(Check::Lacked(None)) => true,
                Some(Check::Lacked(Some(by))) => {
                    self.writes[self.write_idx[by]].op.kind == Kind::Delete
                }
                _ => false,
            };
            let coincident_delete = self.window_erased.iter().enumerate().any(|(i, e)| {
                let later = &self.writes[self.write_idx[&e.1]];
                e.0 == rec.node
                    && e.1 > id
                    && later.sender == rec.sender
                    && later.op.kind == Kind::Delete
                    && absent(self.window_checks.get(&i))
            });
            let why = if superseded || resend_superseded {
                WindowLoss::Superseded
            } else if unacknowledged {
                WindowLoss::Unacknowledged
            } else if window_won && !strict_findings() {
                WindowLoss::WindowWon
            } else if writer_died && self.window.contains(&id) && (check.is_none() || resent_since)
            {
                WindowLoss::WriterDied
            } else if (own_chain || coincident_delete) && !strict_findings() {
                WindowLoss::OwnChain
            } else {
                self.fail(&format!(
                    "resync at step {step} erased own-delivery write {id} ({:?} {} of {}, {:?}) on node {}, \
                     and it is not in the settled state ({:?}): its writer's check {check:?}, re-sends {:?}, \
                     still own-delivery only: {}",
                    rec.op.kind,
                    rec.op.key,
                    rec.sender,
                    rec.status,
                    self.nodes[node].node_id,
                    fin.last.get(&rec.op.key),
                    self.resends.get(&id),
                    self.window.contains(&id),
                ));
            };
            self.trace(|| format!("own-delivery write {id} not kept: {why:?} ({check:?})"));
            *self
                .stats
                .window_lost
                .entry(format!("{why:?}"))
                .or_default() += 1;
            self.window_lost.insert(id, why);
        }
        self.window_erased_checked = self.window_erased.len();
    }

    /// Was `later` written over `earlier`, directly or through a chain of
    /// writes to the key (on any nodes)?
    fn applied_after(&self, earlier: u64, later: u64) -> bool {
        let mut seen = BTreeSet::new();
        let mut todo = vec![earlier];
        while let Some(a) = todo.pop() {
            for &b in self.overwrites.get(&a).into_iter().flatten() {
                if b == later {
                    return true;
                }
                if seen.insert(b) {
                    todo.push(b);
                }
            }
        }
        false
    }

    /// The event that began the fork a resync found (module docs), from the
    /// two histories and the simulator's log; `None`: no known cause.
    fn cause_of(&self, e: &Erasure) -> Option<Cause> {
        // (a) One branch's lineage lost a write the other branch has.
        let lost_here = e.extra.iter().filter_map(|id| e.dropped_here.get(id));
        let lost_there = e.erased.iter().filter_map(|id| e.dropped_there.get(id));
        if let Some(&how) = lost_here.chain(lost_there).min() {
            return Some(Cause::Queue(how));
        }
        // No fork (only after finding 1): the leader's lineage applied a
        // resent write twice, so a state with fewer writes has the higher
        // version.
        if e.extra.is_empty() {
            return (!e.twice_there.is_empty()).then_some(Cause::UnsyncedSender);
        }
        // The first write of each branch (the earliest first application
        // among the writes the other branch lacks).
        let first_of = |side: &BTreeSet<u64>| {
            side.iter()
                .copied()
                .min_by_key(|id| (self.first_applied[id].event, *id))
        };
        let firsts: Vec<u64> = [&e.erased, &e.extra]
            .into_iter()
            .filter_map(first_of)
            .collect();
        // Finding 1: a write applied in a different order by the members.
        if firsts.iter().any(|id| self.quirk_writes.contains(id)) {
            return Some(Cause::UnsyncedSender);
        }
        // A branch began with a write first applied by at most half of the
        // nodes: (b) because its group held at most half of the nodes, or
        // (a) because the other members of a larger group lost it with a
        // queue (their lineage may since have been replaced by a resync).
        let n = self.nodes.len();
        let mut causes = firsts.iter().filter_map(|id| {
            let first = &self.first_applied[id];
            if first.holders.len() * 2 > n {
                None
            } else if first.group * 2 <= n {
                Some(Cause::MinorityGroup)
            } else if let Some(&how) = self.queue_lost.get(id) {
                Some(Cause::Queue(how))
            } else if first.diverged {
                Some(Cause::UnsyncedSender)
            } else {
                first.others.iter().find_map(|&(mode, why)| {
                    (mode == Mode::Leave).then_some(Cause::LeftOnItsOwn(why?))
                })
            }
        });
        causes.next()
    }

    /// Every erasure since the last settle must have a known cause.
    fn explain_erasures(&mut self) {
        for at in self.erasures_checked..self.erasures.len() {
            let cause = self.cause_of(&self.erasures[at]);
            let e = &self.erasures[at];
            let Some(cause) = cause else {
                let describe = |ids: &BTreeSet<u64>| -> Vec<String> {
                    ids.iter()
                        .map(|id| {
                            let f = &self.first_applied[id];
                            format!(
                                "{id} (first applied by {:?} in a group of {}, the others {:?}, diverged {}; lost with a queue: {:?})",
                                f.holders
                                    .iter()
                                    .map(|&i| self.nodes[i].node_id)
                                    .collect::<Vec<_>>(),
                                f.group,
                                f.others,
                                f.diverged,
                                self.queue_lost.get(id),
                            )
                        })
                        .collect()
                };
                self.fail(&format!(
                    "resync of node {} from {} at step {} erased writes {:?} for the leader's {:?} \
                     without a known cause (lost with a queue here {:?}, there {:?}; applied twice there {:?}; \
                     unsynced senders' writes {:?})",
                    self.nodes[e.node].node_id,
                    e.leader,
                    e.step,
                    describe(&e.erased),
                    describe(&e.extra),
                    e.dropped_here,
                    e.dropped_there,
                    e.twice_there,
                    self.quirk_writes,
                ));
            };
            *self.stats.erasures.entry(format!("{cause:?}")).or_default() += 1;
            self.erasures[at].cause = Some(cause);
        }
        self.erasures_checked = self.erasures.len();
    }

    /// Is the acknowledged write `w` still visible in the final values (or
    /// overwritten by a write applied after it)?
    fn kept(&self, w: &WriteRec, fin: Val) -> bool {
        let id = w.op.id;
        let later_of = |kind: Kind| {
            w.op.kind == kind
                || self.writes.iter().any(|d| {
                    d.op.kind == kind && d.op.key == w.op.key && self.applied_after(id, d.op.id)
                })
        };
        match fin {
            Val::Id(f) => f == id || self.applied_after(id, f),
            Val::Absent => later_of(Kind::Delete),
            Val::Empty => later_of(Kind::Create),
        }
    }

    fn check_lost_writes(&mut self, fin: &BTreeMap<String, Val>) {
        // Acknowledged writes a repeat undid (`applied_again`; the repeat
        // counts as written over them, so `kept` passes them).
        for (id, what) in std::mem::take(&mut self.undone) {
            let acked = matches!(
                self.writes[self.write_idx[&id]].status,
                WriteStatus::Acked(_)
            );
            if acked && self.lost.insert(id) {
                self.trace(|| format!("acked write {id} lost: undone by a {what}"));
                *self.stats.lost_undone.entry(what.to_string()).or_default() += 1;
            }
        }
        // DFSM_SIM_STRICT=1: accept only the brief's exception (every
        // holder died), to find examples of the C protocol's losses.
        let strict = std::env::var("DFSM_SIM_STRICT").is_ok_and(|v| v != "0");
        for w in &self.writes {
            let id = w.op.id;
            if !matches!(w.status, WriteStatus::Acked(_))
                || self.lost.contains(&id)
                || self.kept(w, fin[&w.op.key])
            {
                continue;
            }
            // Accepted only under the C policies and if a resync with a known
            // cause erased it (the cause of the last one counts).
            let cause = self
                .erased
                .get(&id)
                .and_then(|at| at.last())
                .and_then(|&at| self.erasures[at].cause);
            let all_died = self
                .nodes
                .iter()
                .filter_map(|n| n.applied.get(&id).map(|&at| n.last_death > at))
                .all(|died| died);
            if self.policy == Policy::Strict && self.window_wins_erased.contains(&id) {
                self.trace(|| format!("acked write {id} lost: erased for own-delivery writes"));
                self.lost.insert(id);
                self.stats.lost_window_wins += 1;
                continue;
            }
            if self.policy == Policy::Strict
                && let Some(why) = self.window_lost.get(&id)
            {
                // Write safety: an acknowledged own-delivery write that a
                // resync erased and that is not back (see
                // `check_window_erasures`).
                self.trace(|| format!("acked write {id} lost ({why:?})"));
                self.lost.insert(id);
                *self
                    .stats
                    .lost_acked_window
                    .entry(format!("{why:?}"))
                    .or_default() += 1;
                continue;
            }
            if let Some(cause) = cause
                && self.policy != Policy::Strict
                && (!strict || all_died)
            {
                self.trace(|| format!("acked write {id} lost ({cause:?})"));
                self.lost.insert(id);
                self.stats.lost_writes_c += 1;
                self.stats.lost_all_holders_died += u64::from(all_died);
                *self
                    .stats
                    .lost_by_cause
                    .entry(format!("{cause:?}"))
                    .or_default() += 1;
                continue;
            }
            self.fail(&format!(
                "acknowledged write {id} ({:?} {} on node {}, acked at step {}) lost; final {:?}; \
                 erased by resyncs {:?}; q2-discard involved: {}",
                w.op.kind,
                w.op.key,
                self.nodes[w.node].node_id,
                w.ack_step,
                fin[&w.op.key],
                self.erased.get(&id),
                self.discarded_q2.contains(&id),
            ));
        }
    }

    fn describe(&self, sender: MemberId, msg: &Message) -> String {
        match &msg.body {
            MessageBody::Normal { count, .. } => {
                let shared = self.shared.borrow();
                match shared.write_id(sender, msg).map(|id| &shared.ops[&id]) {
                    Some(w) => format!("NORMAL #{count} write {} {:?} {}", w.id, w.kind, w.key),
                    None => format!("NORMAL #{count}"),
                }
            }
            MessageBody::SyncStart { epoch } => {
                format!("SYNC_START {}/{}/{}", epoch.node_id, epoch.pid, epoch.epoch)
            }
            MessageBody::State { epoch, .. } => {
                format!("STATE {}/{}/{}", epoch.node_id, epoch.pid, epoch.epoch)
            }
            MessageBody::Update { .. } => "UPDATE".into(),
            MessageBody::UpdateComplete { .. } => "UPDATE_COMPLETE".into(),
            MessageBody::VerifyRequest { csum_id, .. } => format!("VERIFY_REQUEST {csum_id}"),
            MessageBody::Verify { csum_id, .. } => format!("VERIFY {csum_id}"),
            MessageBody::Malformed(m) => format!("{m:?}"),
        }
    }
}

fn sim_ids(sim: &Sim) -> Vec<u32> {
    sim.nodes.iter().map(|n| n.node_id).collect()
}

fn run_seed(seed: u64, trace: bool, forced: Option<Policy>) -> Stats {
    // The real stores live as long as the simulation (as the daemon's: a
    // store session of the DCDB application is `Session<'static>`).
    let dir = real_dcdb(seed).then(store_dir);
    // Declared before the simulation, so dropped after it, also when a
    // seed fails (its LMDB semaphores leave /dev/shm with the store).
    let stores = Leaked(match &dir {
        Some(dir) => (0..node_count(seed))
            .map(|i| {
                Store::open(&dir.path().join(format!("node{i}")))
                    .expect("open a store")
                    .leak()
            })
            .collect(),
        None => Vec::new(),
    });
    let mut sim = Sim::new(seed, trace, forced, &stores.0);
    let rounds = sim.rng.range(1, 3);
    for _ in 0..rounds {
        let steps = sim.rng.range(100, 400);
        for _ in 0..steps {
            sim.random_step();
        }
        sim.settle();
    }
    match sim.policy {
        Policy::Gated => sim.stats.runs_gated += 1,
        Policy::Ungated => sim.stats.runs_ungated += 1,
        Policy::Strict => sim.stats.runs_strict += 1,
    }
    sim.stats.runs_with_quirk += u64::from(sim.quirk_seen);
    sim.stats.runs_evs += u64::from(sim.evs);
    sim.stats.runs_dcdb += u64::from(sim.dcdb);
    sim.stats.phantom_writes += sim.phantom.len() as u64;
    let stats = sim.stats.clone();
    // Every session (and reader) of the stores goes with the simulation,
    // before `stores`.
    drop(sim);
    stats
}

/// The leaked stores of a real-DCDB seed, reclaimed when dropped: after the
/// simulation, which holds every borrow of them (declare it later).
struct Leaked(Vec<&'static Store>);

impl Drop for Leaked {
    fn drop(&mut self) {
        for store in self.0.drain(..) {
            // SAFETY: the stores come from `Store::leak`, and the simulation,
            // which held every borrow of them, was dropped before this.
            unsafe { Store::reclaim(store) };
        }
    }
}

/// The seeds to run: `DFSM_SIM_SEED` (one), else `DFSM_SIM_SEED_BASE` (0)
/// plus `0..n`, n from `count_var` or `default`.
fn seeds(count_var: &str, default: u64) -> Vec<u64> {
    let var = |name: &str| {
        std::env::var(name).ok().map(|s| {
            s.parse::<u64>()
                .unwrap_or_else(|_| panic!("{name} must be a number"))
        })
    };
    if let Some(seed) = var("DFSM_SIM_SEED") {
        return vec![seed];
    }
    let base = var("DFSM_SIM_SEED_BASE").unwrap_or(0);
    (base..base + var(count_var).unwrap_or(default)).collect()
}

/// Lost acknowledged writes the C policies may lose, per 10,000
/// acknowledged writes of their runs. Measured on seeds 0..25,000 (the C
/// policies' 518,000 acknowledged writes): 232 overall, 163 to 283 in
/// windows of 300 seeds (the default run: 257); the bound leaves room for
/// other seed sets, while a change that loses noticeably more trips it.
const C_LOSS_BOUND_PER_10K: u64 = 500;

/// Acknowledged writes of write-safe runs that the write-safety findings
/// (module docs) lost, per 10,000 acknowledged writes of those runs.
/// Measured on 20,000 seeds per application: about 3 with EVS (W1, W2),
/// 1 to 3 without (W1); the bound trips on a change that loses noticeably
/// more.
const FINDINGS_LOSS_BOUND_PER_10K: u64 = 15;

/// The summary of the write-safe runs, and the bound on their findings.
fn write_safety_summary(total: &Stats) {
    let acked = total.writes_acked - total.writes_acked_c;
    let lost = total.lost_undone.values().sum::<u64>()
        + total.lost_window_wins
        + total.lost_acked_window.get("WindowWon").unwrap_or(&0)
        + total.lost_acked_window.get("OwnChain").unwrap_or(&0);
    eprintln!(
        "write safety: {} runs ({} with EVS), {acked} acknowledged writes; own-delivery window: \
         {} writes, {} erased, {} re-sent, not back when settled {:?} (acknowledged {:?}); \
         findings: {} ABA re-sends, {} resyncs won by own-delivery writes, {} queue-1 resends, \
         {lost} acknowledged writes lost ({:?}, {} + {} with W2, {} with W4)",
        total.runs_strict,
        total.runs_evs,
        total.window_writes,
        total.erased_window,
        total.resent,
        total.window_lost,
        total.lost_acked_window,
        total.aba_resends,
        total.window_wins,
        total.queue_resends,
        total.lost_undone,
        total.lost_window_wins,
        total.lost_acked_window.get("WindowWon").unwrap_or(&0),
        total.lost_acked_window.get("OwnChain").unwrap_or(&0),
    );
    if total.runs_strict >= 100 {
        assert!(
            lost * 10_000 <= acked * FINDINGS_LOSS_BOUND_PER_10K,
            "the write-safety findings lost {lost} of {acked} acknowledged writes (bound \
             {FINDINGS_LOSS_BOUND_PER_10K} per 10,000)"
        );
    }
}

#[test]
fn dfsm_simulation() {
    let trace = std::env::var("DFSM_SIM_TRACE").is_ok_and(|v| v != "0");
    let seeds = seeds("DFSM_SIM_SEEDS", 300);
    let started = std::time::Instant::now();
    let mut total = Stats::default();
    for &seed in &seeds {
        total.add(&run_seed(seed, trace, None));
    }
    eprintln!(
        "{} seeds in {:.1?}: {total:?}",
        seeds.len(),
        started.elapsed()
    );
    eprintln!(
        "C policies: {} acknowledged writes, {} lost as C findings, by cause {:?}; erasures by cause {:?}",
        total.writes_acked_c, total.lost_writes_c, total.lost_by_cause, total.erasures
    );
    write_safety_summary(&total);
    assert!(total.writes_acked > 0 && total.probes == total.settles);
    // Too few runs say nothing about a share.
    if total.runs_gated + total.runs_ungated >= 100 {
        assert!(
            total.lost_writes_c * 10_000 <= total.writes_acked_c * C_LOSS_BOUND_PER_10K,
            "the C policies lost {} of {} acknowledged writes (bound {C_LOSS_BOUND_PER_10K} per 10,000)",
            total.lost_writes_c,
            total.writes_acked_c
        );
    }
}

/// Write-safe groups only (what a cluster of our nodes runs): every write
/// first applied by a majority, no write erased by a resync, no
/// acknowledged write lost, progress after every settle; three of four
/// seeds with EVS, where the own-delivery window's rules and the
/// write-safety findings apply (module docs). `make sim-strict` runs 100,000 seeds
/// (RELIABILITY.md). Replay a seed: `DFSM_SIM_POLICY=strict
/// DFSM_SIM_SEED=<n> DFSM_SIM_TRACE=1 cargo test -p pmxcfs-cpg --test
/// dfsm_sim dfsm_simulation -- --exact`.
#[test]
fn dfsm_simulation_write_safety() {
    let seeds = seeds("DFSM_SIM_STRICT_SEEDS", 400);
    let started = std::time::Instant::now();
    let mut total = Stats::default();
    for &seed in &seeds {
        total.add(&run_seed(seed, false, Some(Policy::Strict)));
    }
    eprintln!(
        "{} write-safe seeds in {:.1?}: {total:?}",
        seeds.len(),
        started.elapsed()
    );
    write_safety_summary(&total);
    assert!(total.writes_acked > 0 && total.probes == total.settles);
    assert_eq!(total.phantom_writes, 0);
    if total.runs_evs >= 50 {
        // The window is exercised: writes in it, re-sent after the heal.
        assert!(total.window_writes > 0 && total.resent > 0, "{total:?}");
    }
}

// ---------------------------------------------------------------------------
// Scripted reproductions of the C protocol findings (module docs). They
// assert the C behaviour, which the Rust DFSM deliberately shares.

/// A hand-driven CPG: the test picks the total order.
struct Script {
    procs: Vec<Dfsm<KvApp>>,
    config: Vec<usize>,
    pending: Vec<(MemberId, Message)>,
    results: BTreeMap<(usize, u64), i32>,
    clock: u32,
}

impl Script {
    fn new(stores: Vec<KvStore>) -> Self {
        let procs = stores
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let mut app = KvApp::new(s);
                app.quorate = true;
                Dfsm::new(MemberId::new(i as u32 + 1, 100 + i as u32), PROTOCOL, app)
            })
            .collect();
        Script {
            procs,
            config: Vec::new(),
            pending: Vec::new(),
            results: BTreeMap::new(),
            clock: 1000,
        }
    }

    fn id(&self, i: usize) -> MemberId {
        self.procs[i].local()
    }

    fn collect(&mut self) {
        for i in 0..self.procs.len() {
            let me = self.id(i);
            let acts: Vec<Action> = self.procs[i].drain_actions().collect();
            for a in acts {
                match a {
                    Action::Multicast(m) => self.pending.push((me, m)),
                    Action::Result { count, result } => {
                        self.results.insert((i, count), result);
                    }
                    _ => {}
                }
            }
        }
    }

    /// A configuration change to `members` (all of them are told).
    fn confchg(&mut self, members: &[usize]) {
        let old = std::mem::replace(&mut self.config, members.to_vec());
        let ids: Vec<MemberId> = members.iter().map(|&i| self.id(i)).collect();
        self.pending.retain(|(s, _)| ids.contains(s));
        for &i in members {
            let joined: Vec<MemberId> = members
                .iter()
                .filter(|j| !old.contains(j))
                .map(|&j| self.id(j))
                .collect();
            self.procs[i].on_confchg(&ids, &joined, self.clock);
        }
        self.collect();
    }

    /// Delivers the first pending message matching `pick` to `to`.
    fn deliver_to(&mut self, to: &[usize], pick: impl Fn(MemberId, &Message) -> bool) {
        self.clock += 1;
        let pos = self
            .pending
            .iter()
            .position(|(s, m)| pick(*s, m))
            .expect("no such pending message");
        let (sender, msg) = self.pending.remove(pos);
        for &i in to {
            self.procs[i].on_deliver(sender, msg.clone(), self.clock);
        }
        self.collect();
    }

    fn deliver(&mut self, pick: impl Fn(MemberId, &Message) -> bool) {
        let to = self.config.clone();
        self.deliver_to(&to, pick);
    }

    fn deliver_all(&mut self) {
        while !self.pending.is_empty() {
            self.deliver(|_, _| true);
        }
    }

    fn write(&mut self, i: usize, id: u64, key: &str) -> u64 {
        self.clock += 1;
        let payload = encode_write(&WriteOp {
            id,
            key: key.into(),
            kind: Kind::Set,
        });
        let count = self.procs[i]
            .send_normal(SUBTYPE_WRITE, payload, self.clock)
            .unwrap();
        self.collect();
        count
    }

    fn value(&self, i: usize, key: &str) -> Option<u64> {
        self.procs[i]
            .app()
            .store
            .entries
            .get(key)
            .map(|e| id_of(&e.value))
    }
}

fn is_write(m: &Message, id: u64) -> bool {
    matches!(&m.body, MessageBody::Normal { payload, .. } if decode_write(payload).is_some_and(|w| w.id == id))
}

fn is_state(m: &Message) -> bool {
    matches!(m.body, MessageBody::State { .. })
}

fn store_with(version: u64, mtime: u32) -> KvStore {
    KvStore {
        version,
        mtime,
        writer: 1,
        ..KvStore::default()
    }
}

/// Finding 1: a write sent by a member in UPDATE mode is applied at once by
/// the SYNCED members but only after queue 2 by the updating members.
#[test]
fn c_quirk_unsynced_sender_divergence() {
    // L and S hold the newer state, U an older one.
    let mut c = Script::new(vec![
        store_with(2, 20),
        store_with(2, 20),
        store_with(1, 10),
    ]);
    let (l, s, u) = (0, 1, 2);
    c.confchg(&[l, s, u]);
    c.deliver(|_, m| matches!(m.body, MessageBody::SyncStart { .. }));
    for _ in 0..3 {
        c.deliver(|_, m| is_state(m));
    }
    assert_eq!(c.procs[l].mode(), Mode::Synced);
    assert_eq!(c.procs[s].mode(), Mode::Synced);
    assert_eq!(c.procs[u].mode(), Mode::Update);
    // U (not synced) and S (synced) both write key "k"; CPG orders U's first,
    // both before the leader's UPDATE_COMPLETE.
    let cu = c.write(u, 1, "k");
    let cs = c.write(s, 2, "k");
    c.deliver(|_, m| is_write(m, 1));
    c.deliver(|_, m| is_write(m, 2));
    c.deliver_all();
    for i in [l, s, u] {
        assert_eq!(c.procs[i].mode(), Mode::Synced);
    }
    assert_eq!(c.results[&(u, cu)], 0, "U's write acknowledged");
    assert_eq!(c.results[&(s, cs)], 0, "S's write acknowledged");
    // CPG order at L and S: 1 then 2. U: queue 2 (write 2) then queue 1 (write 1).
    assert_eq!(c.value(l, "k"), Some(2));
    assert_eq!(c.value(s, "k"), Some(2));
    assert_eq!(
        c.value(u, "k"),
        Some(1),
        "SYNCED members of one configuration diverge"
    );
    // C's repair: the next VERIFY round makes the mismatching member leave.
    assert!(c.procs[l].request_verify(c.clock));
    c.collect();
    c.deliver_all();
    assert_eq!(c.procs[u].mode(), Mode::Leave);
    assert_eq!(c.procs[s].mode(), Mode::Synced);
}

/// Finding 2 (a): queue 2 is discarded by a confchg; a write the SYNCED
/// members applied (and acknowledged) during the update is then missing on
/// the updating members, and if those go on (quorate) without a holder, the
/// next resync keeps their branch and the write is gone although no holder
/// ever crashed.
#[test]
fn c_quirk_update_queue_discard_loses_acked_write() {
    // Five nodes: L, S newer (version 2); U1..U3 older (version 1).
    let mut c = Script::new(vec![
        store_with(2, 20),
        store_with(2, 20),
        store_with(1, 10),
        store_with(1, 10),
        store_with(1, 10),
    ]);
    let all = [0, 1, 2, 3, 4];
    let (l, s) = (0, 1);
    let us = [2, 3, 4];
    c.confchg(&all);
    c.deliver(|_, m| matches!(m.body, MessageBody::SyncStart { .. }));
    for _ in 0..5 {
        c.deliver(|_, m| is_state(m));
    }
    assert!(us.iter().all(|&i| c.procs[i].mode() == Mode::Update));
    // S writes "x" before the leader's UPDATE_COMPLETE is delivered.
    let cs = c.write(s, 1, "x");
    c.deliver(|_, m| is_write(m, 1));
    assert_eq!(c.results[&(s, cs)], 0, "acknowledged: applied by L and S");
    assert!(
        us.iter().all(|&i| c.procs[i].sync_queued().len() == 1),
        "held in queue 2"
    );
    // Partition {L, S} | {U1, U2, U3} before UPDATE_COMPLETE. The leader's
    // UPDATE/UPDATE_COMPLETE stay on its side, where the confchg makes them
    // stale (other epoch).
    c.pending.clear();
    c.confchg(&us);
    assert!(
        us.iter().all(|&i| c.procs[i].sync_queued().is_empty()),
        "queue 2 discarded"
    );
    c.deliver_all();
    assert!(us.iter().all(|&i| c.procs[i].mode() == Mode::Synced));
    // The majority side (3 of 5 nodes: quorate) writes three times.
    for id in [10, 11, 12] {
        c.write(2, id, "y");
        c.deliver_all();
    }
    // The minority side {L, S} (not quorate, no writes) resyncs by itself.
    c.procs[l].app_mut().quorate = false;
    c.procs[s].app_mut().quorate = false;
    c.confchg(&[l, s]);
    c.deliver_all();
    assert_eq!(c.value(l, "x"), Some(1));
    assert_eq!(c.value(s, "x"), Some(1));
    assert_eq!(c.procs[l].mode(), Mode::Synced);
    c.procs[l].app_mut().quorate = true;
    c.procs[s].app_mut().quorate = true;
    // Heal: one configuration of all five; the leader is the highest version.
    c.pending.clear();
    c.confchg(&all);
    c.deliver_all();
    for i in all {
        assert_eq!(c.procs[i].mode(), Mode::Synced);
        assert_eq!(
            c.value(i, "x"),
            None,
            "the acknowledged write is lost on node {}",
            i + 1
        );
        assert_eq!(c.value(i, "y"), Some(12));
    }
}
