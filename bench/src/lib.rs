//! Shared set-up for the store benchmarks: a store in a temporary directory,
//! filled like /etc/pve (nodes, guest configs), and byte accounting.

use pmxcfs_store::{ApplyPermit, Durability, Op, Origin, Reader, Session, Store};

pub const ORIGIN: Origin = Origin {
    writer: 0,
    mtime: 1_700_000_000,
};

/// A config-like payload of `size` bytes.
pub fn config_bytes(size: usize) -> Vec<u8> {
    let line = b"scsi0: local-lvm:vm-100-disk-0,size=32G\n";
    line.iter().copied().cycle().take(size).collect()
}

/// A store with `guests` guest configs under nodes/pve1/qemu-server.
///
/// The session borrows the store, so both live in one leaked allocation for
/// the benchmark's lifetime (each benchmark makes a handful of them).
pub struct Tree {
    pub session: Session<'static>,
    permit: ApplyPermit,
    _dir: tempfile::TempDir,
}

impl Tree {
    pub fn new(durability: Durability, guests: u32) -> Tree {
        let dir = tempfile::tempdir().expect("tempdir");
        // Leaked for the benchmark's lifetime (a handful per run).
        let store: &'static Store = Store::open(dir.path()).expect("open").leak();
        let (session, permit) = store.session(durability).expect("session");
        let mut tree = Tree {
            session,
            permit,
            _dir: dir,
        };
        for path in [
            "nodes",
            "nodes/pve1",
            "nodes/pve1/qemu-server",
            "nodes/pve1/lxc",
        ] {
            tree.apply(&Op::Mkdir {
                path: path.as_bytes(),
            });
        }
        let data = config_bytes(500);
        for vmid in 100..100 + guests {
            let path = format!("nodes/pve1/qemu-server/{vmid}.conf");
            tree.apply(&Op::Create {
                path: path.as_bytes(),
            });
            tree.apply(&Op::Write {
                path: path.as_bytes(),
                offset: 0,
                data: &data,
                truncate: false,
            });
        }
        tree.commit();
        tree.checkpoint();
        tree
    }

    pub fn apply(&mut self, op: &Op<'_>) -> u32 {
        self.session
            .writer(&mut self.permit)
            .apply(op, ORIGIN)
            .expect("apply")
    }

    pub fn commit(&mut self) {
        self.session.commit().expect("commit");
    }

    pub fn sync(&mut self) {
        self.session.sync().expect("sync");
    }

    pub fn checkpoint(&mut self) {
        self.session.checkpoint().expect("checkpoint");
    }

    pub fn reader(&self) -> Reader<'_> {
        self.session.reader()
    }
}

/// Bytes this process has caused to be written to storage so far
/// (`write_bytes` of /proc/self/io: pages dirtied, counted once per dirtying).
pub fn process_write_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix("write_bytes: "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}
