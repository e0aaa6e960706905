//! Path rules of the tree (spec/memdb.md §10, spec/filesystem.md §3.3, §6.4, §8).
//!
//! Paths are relative byte strings without a leading `/`, exactly as they
//! travel in DCDB messages. Empty components are ignored (`a//b/` = `a/b`).

/// The components of a path, skipping empty ones.
pub fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|byte| *byte == b'/')
        .filter(|part| !part.is_empty())
}

/// Splits a path into its parent components and its last component, the way
/// the C daemon's `split_path` (GLib dirname/basename) does: trailing slashes
/// are dropped; a path with no component has the basename `.` (which every
/// operation refuses); a dirname of exactly `""`, `.` or `/` is the root,
/// any other dirname is walked component by component (`.` taken literally).
pub fn split(path: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let end = path
        .iter()
        .rposition(|byte| *byte != b'/')
        .map_or(0, |last| last + 1);
    let trimmed = &path[..end];
    if trimmed.is_empty() {
        return (Vec::new(), b".");
    }
    match trimmed.iter().rposition(|byte| *byte == b'/') {
        None => (Vec::new(), trimmed),
        Some(slash) => {
            let dir_end = trimmed[..slash]
                .iter()
                .rposition(|byte| *byte != b'/')
                .map_or(0, |last| last + 1);
            (parts_of_lookup(&trimmed[..dir_end]), &trimmed[slash + 1..])
        }
    }
}

/// The components `memdb_lookup_path` walks for `path`: none for exactly
/// `""`, `.` and `/` (the root), else the non-empty components.
pub fn parts_of_lookup(path: &[u8]) -> Vec<&[u8]> {
    if path.is_empty() || path == b"." || path == b"/" {
        return Vec::new();
    }
    components(path).collect()
}

/// `""`, `.` and `..` cannot be created, written or touched (EACCES).
pub fn is_forbidden_name(name: &[u8]) -> bool {
    name.is_empty() || name == b"." || name == b".."
}

/// Joins components with `/` (the normalised form of a path).
pub fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(part);
    }
    out
}

/// The directory that holds cluster locks.
pub const LOCK_DIR: &[&[u8]] = &[b"priv", b"lock"];

/// True when the parent components are exactly `priv/lock`.
pub fn is_lock_parent(parent: &[&[u8]]) -> bool {
    parent == LOCK_DIR
}

/// `path_is_lockdir`: `priv/lock/` followed by at least one more byte
/// (leading slashes ignored). A plain prefix test, as in the C daemon.
pub fn is_lockdir(path: &[u8]) -> bool {
    let trimmed = trim_leading_slashes(path);
    trimmed.len() > b"priv/lock/".len() && trimmed.starts_with(b"priv/lock/")
}

/// `path_is_private`: `priv`, `priv/...`, `nodes/<x>/priv`, `nodes/<x>/priv/...`.
pub fn is_private(path: &[u8]) -> bool {
    let trimmed = trim_leading_slashes(path);
    let under = |rest: &[u8], prefix: &[u8]| {
        rest.starts_with(prefix) && (rest.len() == prefix.len() || rest[prefix.len()] == b'/')
    };
    if under(trimmed, b"priv") {
        return true;
    }
    if let Some(rest) = trimmed.strip_prefix(b"nodes/")
        && let Some(slash) = rest.iter().position(|byte| *byte == b'/')
    {
        return under(&rest[slash + 1..], b"priv");
    }
    false
}

fn trim_leading_slashes(path: &[u8]) -> &[u8] {
    let start = path
        .iter()
        .position(|byte| *byte != b'/')
        .unwrap_or(path.len());
    &path[start..]
}

/// Guest types and their numbers in the C daemon's vmlist.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GuestType {
    Qemu = 1,
    Openvz = 2,
    Lxc = 3,
}

impl GuestType {
    pub fn from_dir_name(name: &[u8]) -> Option<GuestType> {
        match name {
            b"qemu-server" => Some(GuestType::Qemu),
            b"openvz" => Some(GuestType::Openvz),
            b"lxc" => Some(GuestType::Lxc),
            _ => None,
        }
    }

    /// The directory under `nodes/<node>/` holding its configs.
    pub fn dir_name(self) -> &'static str {
        match self {
            GuestType::Qemu => "qemu-server",
            GuestType::Openvz => "openvz",
            GuestType::Lxc => "lxc",
        }
    }

    /// The name `.vmlist` prints.
    pub fn label(self) -> &'static str {
        match self {
            GuestType::Qemu => "qemu",
            GuestType::Openvz => "openvz",
            GuestType::Lxc => "lxc",
        }
    }
}

/// A guest configuration path `nodes/<node>/<type>/<vmid>.conf`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestConfig {
    pub vmid: u32,
    pub node: Vec<u8>,
    pub guest_type: GuestType,
}

/// `<vmid>.conf` with a decimal vmid starting with 1-9 that fits in u32.
pub fn vmid_of_config_name(name: &[u8]) -> Option<u32> {
    let digits = name.strip_suffix(b".conf")?;
    if digits.is_empty() || !(b'1'..=b'9').contains(&digits[0]) {
        return None;
    }
    if !digits.iter().all(u8::is_ascii_digit) || digits.len() > 10 {
        return None;
    }
    let text = std::str::from_utf8(digits).ok()?;
    text.parse::<u32>().ok()
}

/// LDH rule: ASCII letters and digits, `-` but not first or last.
pub fn is_valid_node_name(name: &[u8]) -> bool {
    if name.is_empty() {
        return false;
    }
    let last = name.len() - 1;
    name.iter().enumerate().all(|(index, byte)| {
        byte.is_ascii_alphanumeric() || (*byte == b'-' && index != 0 && index != last)
    })
}

/// Parses a guest configuration path given as its parent components and
/// basename. Only `nodes/<node>/<type>/<vmid>.conf` counts, nothing deeper.
pub fn guest_config(parent: &[&[u8]], base: &[u8]) -> Option<GuestConfig> {
    let vmid = vmid_of_config_name(base)?;
    match parent {
        [nodes, node, kind] if *nodes == b"nodes" && is_valid_node_name(node) => {
            Some(GuestConfig {
                vmid,
                node: node.to_vec(),
                guest_type: GuestType::from_dir_name(kind)?,
            })
        }
        _ => None,
    }
}

/// Parses a whole path as a guest configuration path.
pub fn guest_config_of_path(path: &[u8]) -> Option<GuestConfig> {
    let (parent, base) = split(path);
    guest_config(&parent, base)
}

#[cfg(test)]
mod tests {

    /// `.vmlist`'s type names (C's `vmtype_to_string`).
    #[test]
    fn guest_type_labels() {
        assert_eq!(GuestType::Qemu.label(), "qemu");
        assert_eq!(GuestType::Openvz.label(), "openvz");
        assert_eq!(GuestType::Lxc.label(), "lxc");
        for guest_type in [GuestType::Qemu, GuestType::Openvz, GuestType::Lxc] {
            assert_eq!(
                GuestType::from_dir_name(guest_type.dir_name().as_bytes()),
                Some(guest_type),
                "the directory of its configs"
            );
        }
    }
    use super::*;

    #[test]
    fn split_follows_the_c_rules() {
        assert_eq!(split(b"a/b/c"), (vec![&b"a"[..], b"b"], &b"c"[..]));
        assert_eq!(split(b"a//b/"), (vec![&b"a"[..]], &b"b"[..]));
        assert_eq!(split(b"x"), (vec![], &b"x"[..]));
        assert_eq!(split(b""), (vec![], &b"."[..]));
        assert_eq!(split(b"/"), (vec![], &b"."[..]));
        // GLib: dirname("./a") is "." (the root); "/./a" walks "." literally.
        assert_eq!(split(b"./a"), (vec![], &b"a"[..]));
        assert_eq!(split(b".//a/"), (vec![], &b"a"[..]));
        assert_eq!(split(b"/./a"), (vec![&b"."[..]], &b"a"[..]));
        assert_eq!(split(b"d/./b"), (vec![&b"d"[..], b"."], &b"b"[..]));
        assert_eq!(parts_of_lookup(b"."), Vec::<&[u8]>::new());
        assert_eq!(parts_of_lookup(b"./"), vec![&b"."[..]]);
    }

    #[test]
    fn guest_config_paths() {
        let config = guest_config_of_path(b"nodes/pve1/qemu-server/100.conf").expect("guest");
        assert_eq!(config.vmid, 100);
        assert_eq!(config.node, b"pve1");
        assert_eq!(config.guest_type, GuestType::Qemu);
        assert_eq!(
            guest_config_of_path(b"nodes/pve-2/lxc/4294967295.conf").map(|c| c.vmid),
            Some(u32::MAX)
        );
        for bad in [
            &b"nodes/pve1/qemu-server/0100.conf"[..],
            b"nodes/pve1/qemu-server/100.conf.tmp",
            b"nodes/pve1/qemu-server/4294967296.conf",
            b"nodes/pve1/qemu-server/+1.conf",
            b"nodes/pve1/qemu-server/.conf",
            b"nodes/-pve1/qemu-server/100.conf",
            b"nodes/pve1-/lxc/100.conf",
            b"nodes/pve1/lxc/sub/100.conf",
            b"nodes/pve1/vz/100.conf",
            b"node/pve1/lxc/100.conf",
        ] {
            assert_eq!(
                guest_config_of_path(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn private_and_lock_paths() {
        for private in [
            &b"priv"[..],
            b"priv/lock",
            b"/priv/x",
            b"nodes/pve1/priv",
            b"nodes/pve1/priv/key",
        ] {
            assert!(is_private(private), "{}", String::from_utf8_lossy(private));
        }
        for public in [
            &b"privx"[..],
            b"nodes/pve1/privx",
            b"nodes/priv",
            b"storage.cfg",
        ] {
            assert!(!is_private(public), "{}", String::from_utf8_lossy(public));
        }
        assert!(is_lockdir(b"priv/lock/x"));
        assert!(is_lockdir(b"/priv/lock/x/y"));
        assert!(!is_lockdir(b"priv/lock/"));
        assert!(!is_lockdir(b"priv/lock"));
    }
}
