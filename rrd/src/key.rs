//! From a status key and value (`rrd/<key>` of SET_STATUS, without the
//! prefix) to the file and the update string (spec/status.md §4.2, and the
//! corrections of §4.5).
//!
//! Beyond C: ids must be safe path components (not empty, `.` or `..`, no
//! `/`, no whitespace or control characters), and values may only hold
//! printable ASCII without spaces: both go into rrdcached's line protocol,
//! where a space or a newline would change the command.

use std::path::PathBuf;

/// The three kinds of files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Node,
    Guest,
    Storage,
}

impl Kind {
    /// The directory of this kind's files, under the RRD base directory.
    pub fn dir(self) -> &'static str {
        match self {
            Kind::Node => "pve-node-9.0",
            Kind::Guest => "pve-vm-9.0",
            Kind::Storage => "pve-storage-9.0",
        }
    }

    /// Data sources of this kind's files.
    pub fn columns(self) -> usize {
        match self {
            Kind::Node => 19,
            Kind::Guest => 17,
            Kind::Storage => 2,
        }
    }

    /// Leading fields of the value that are live data, not archived.
    fn skip(self) -> usize {
        match self {
            Kind::Node => 2,
            Kind::Guest => 4,
            Kind::Storage => 0,
        }
    }
}

/// What a key's format asks of the columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fixup {
    /// Old formats: pad the missing new columns with `U`.
    AppendUnknown(usize),
    /// The 9.0 formats: as sent.
    None,
    /// A later format: the timestamp and the columns the file has.
    Keep,
}

/// One file update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    pub kind: Kind,
    /// Relative to the RRD base directory, e.g. `pve-node-9.0/node1`.
    pub file: PathBuf,
    /// `<timestamp>:<v1>:…`, as `rrdtool update` takes it.
    pub values: String,
}

impl Update {
    /// The timestamp field of the update.
    pub fn timestamp(&self) -> &str {
        self.values.split(':').next().unwrap_or("")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("unknown RRD key format")]
    UnknownKey,
    #[error("unusable id in RRD key")]
    BadId,
    #[error("malformed RRD value")]
    BadValue,
}

/// The file and update string for `key` (without `rrd/`) and `value` (as
/// stored, with or without its NUL).
pub fn parse(key: &[u8], value: &[u8]) -> Result<Update, KeyError> {
    let key = std::str::from_utf8(key).map_err(|_| KeyError::UnknownKey)?;
    let (prefix, id) = key.split_once('/').ok_or(KeyError::UnknownKey)?;
    let (kind, fixup) = format_of(prefix).ok_or(KeyError::UnknownKey)?;
    let file = match kind {
        Kind::Node | Kind::Guest => {
            check_component(id)?;
            PathBuf::from(kind.dir()).join(id)
        }
        Kind::Storage => {
            let (node, storage) = id.split_once('/').ok_or(KeyError::BadId)?;
            check_component(node)?;
            check_component(storage)?;
            PathBuf::from(kind.dir()).join(node).join(storage)
        }
    };
    let value = value.strip_suffix(&[0]).unwrap_or(value);
    if value.is_empty() || !value.iter().all(|b| b.is_ascii_graphic()) {
        return Err(KeyError::BadValue);
    }
    let value = std::str::from_utf8(value).map_err(|_| KeyError::BadValue)?;
    let fields: Vec<&str> = value.split(':').skip(kind.skip()).collect();
    // A timestamp and at least one value.
    if fields.len() < 2 || fields.iter().any(|field| field.is_empty()) {
        return Err(KeyError::BadValue);
    }
    let mut values = String::with_capacity(value.len() + 16);
    match fixup {
        Fixup::AppendUnknown(count) => {
            values.push_str(&fields.join(":"));
            for _ in 0..count {
                values.push_str(":U");
            }
        }
        Fixup::None => values.push_str(&fields.join(":")),
        Fixup::Keep => {
            let wanted = 1 + kind.columns();
            values.push_str(&fields[..fields.len().min(wanted)].join(":"));
            for _ in fields.len()..wanted {
                values.push_str(":U");
            }
        }
    }
    Ok(Update { kind, file, values })
}

fn format_of(prefix: &str) -> Option<(Kind, Fixup)> {
    Some(match prefix {
        "pve2-node" => (Kind::Node, Fixup::AppendUnknown(7)),
        "pve-node-9.0" => (Kind::Node, Fixup::None),
        "pve2.3-vm" => (Kind::Guest, Fixup::AppendUnknown(7)),
        "pve-vm-9.0" => (Kind::Guest, Fixup::None),
        "pve2-storage" | "pve-storage-9.0" => (Kind::Storage, Fixup::None),
        _ if prefix.starts_with("pve-node-") => (Kind::Node, Fixup::Keep),
        _ if prefix.starts_with("pve-vm-") => (Kind::Guest, Fixup::Keep),
        _ if prefix.starts_with("pve-storage-") => (Kind::Storage, Fixup::Keep),
        _ => return None,
    })
}

fn check_component(part: &str) -> Result<(), KeyError> {
    let usable = !part.is_empty()
        && part != "."
        && part != ".."
        && part.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    if usable { Ok(()) } else { Err(KeyError::BadId) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(key: &str, value: &str) -> Result<(String, String), KeyError> {
        parse(key.as_bytes(), value.as_bytes())
            .map(|update| (update.file.display().to_string(), update.values))
    }

    #[test]
    fn every_key_format_of_the_spec() {
        // pvestatd's old node format: uptime and sublevel skipped, 12
        // columns padded to 19.
        let old_node = "3600:1:1700000000:0.5:4:0.1:0.01:8000:4000:2000:0:100:50:10:20\0";
        assert_eq!(
            values("pve2-node/node1", old_node),
            Ok((
                "pve-node-9.0/node1".into(),
                "1700000000:0.5:4:0.1:0.01:8000:4000:2000:0:100:50:10:20:U:U:U:U:U:U:U".into()
            ))
        );
        let new_node = format!("3600:1:1700000000{}", ":1".repeat(19));
        assert_eq!(
            values("pve-node-9.0/node1", &new_node),
            Ok((
                "pve-node-9.0/node1".into(),
                format!("1700000000{}", ":1".repeat(19))
            ))
        );
        // A later node format with more columns: the file's 19.
        let future = format!("3600:1:1700000000{}:7:8", ":1".repeat(19));
        assert_eq!(
            values("pve-node-10.0/node1", &future),
            Ok((
                "pve-node-9.0/node1".into(),
                format!("1700000000{}", ":1".repeat(19))
            ))
        );
        // Guests skip 4 fields (uptime, name, status, template).
        let old_vm = "60:vm100:running:0:1700000000:2:0.5:2048:1024:100:50:1:2:3:4";
        assert_eq!(
            values("pve2.3-vm/100", old_vm),
            Ok((
                "pve-vm-9.0/100".into(),
                "1700000000:2:0.5:2048:1024:100:50:1:2:3:4:U:U:U:U:U:U:U".into()
            ))
        );
        let new_vm = format!("60:vm100:running:0:1700000000{}", ":2".repeat(17));
        assert_eq!(
            values("pve-vm-9.0/100", &new_vm).map(|v| v.1),
            Ok(format!("1700000000{}", ":2".repeat(17)))
        );
        // A later guest format with fewer columns is padded.
        assert_eq!(
            values("pve-vm-11.0/100", "60:vm:running:0:1700000000:1:2").map(|v| v.1),
            Ok(format!("1700000000:1:2{}", ":U".repeat(15)))
        );
        // Storage: node/storage, nothing skipped.
        assert_eq!(
            values("pve2-storage/node1/local", "1700000000:1000:100\0"),
            Ok((
                "pve-storage-9.0/node1/local".into(),
                "1700000000:1000:100".into()
            ))
        );
        assert_eq!(
            values("pve-storage-9.0/node1/local", "1700000000:1000:100").map(|v| v.1),
            Ok("1700000000:1000:100".into())
        );
        // C dropped the last character here (`...:100:22` stored as 2).
        assert_eq!(
            values("pve-storage-10/node1/local", "1700000000:100:22").map(|v| v.1),
            Ok("1700000000:100:22".into())
        );
    }

    #[test]
    fn unknown_and_unsafe_keys_are_refused() {
        let value = "1700000000:1:2";
        assert_eq!(values("rrd/x", value), Err(KeyError::UnknownKey));
        assert_eq!(values("pve2-node", value), Err(KeyError::UnknownKey));
        assert_eq!(values("other/node1", value), Err(KeyError::UnknownKey));
        for id in ["", ".", "..", "a/b", "a b", "a\nb"] {
            assert_eq!(
                values(&format!("pve2-node/{id}"), value),
                Err(KeyError::BadId),
                "{id:?}"
            );
        }
        for id in [
            "/local",
            "node1/",
            "../local",
            "node1/..",
            "node1/a/b",
            "node1",
        ] {
            assert_eq!(
                values(&format!("pve2-storage/{id}"), value),
                Err(KeyError::BadId),
                "{id:?}"
            );
        }
    }

    #[test]
    fn values_that_would_change_the_rrdcached_command_are_refused() {
        for value in [
            "",
            "\0",
            "1700000000:1 2",
            "1700000000:1\nFLUSHALL",
            "1700000000",
            "1700000000::2",
            "1700000000:\u{e9}",
        ] {
            assert_eq!(
                values("pve2-storage/node1/local", value),
                Err(KeyError::BadValue),
                "{value:?}"
            );
        }
        // Fewer fields than the live part.
        assert_eq!(values("pve2-node/node1", "1:2"), Err(KeyError::BadValue));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_never_leaves_the_directory(
            key in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            value in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            if let Ok(update) = parse(&key, &value) {
                for part in update.file.components() {
                    let normal = matches!(part, std::path::Component::Normal(_));
                    proptest::prop_assert!(normal);
                }
                proptest::prop_assert!(update.values.bytes().all(|b| b.is_ascii_graphic()));
            }
        }
    }
}
