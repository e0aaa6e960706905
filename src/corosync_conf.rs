//! corosync.conf between the tree and the host (spec/filesystem.md §9): the
//! tree's copy wins when its `config_version` is not older; the host file is
//! replaced atomically; corosync is asked to reload when the change came
//! from this node.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The first `config_version\s*:\s*(\d+)` of the text (0 if none).
pub fn config_version(text: &[u8]) -> u64 {
    const KEY: &[u8] = b"config_version";
    let mut from = 0;
    while let Some(at) = text[from..]
        .windows(KEY.len())
        .position(|window| window == KEY)
    {
        let mut rest = &text[from + at + KEY.len()..];
        rest = trim_space(rest);
        if let Some(after) = rest.strip_prefix(b":") {
            let digits = trim_space(after);
            let count = digits.iter().take_while(|b| b.is_ascii_digit()).count();
            if count > 0 {
                // C: strtoull; an overflow saturates.
                let mut value: u64 = 0;
                for digit in &digits[..count] {
                    value = value
                        .saturating_mul(10)
                        .saturating_add(u64::from(digit - b'0'));
                }
                return value;
            }
        }
        from += at + 1;
    }
    0
}

fn trim_space(bytes: &[u8]) -> &[u8] {
    let skip = bytes.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &bytes[skip..]
}

/// What [`sync`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No (usable) corosync.conf in the tree, or the host file is the same.
    Unchanged,
    /// The host file is newer than the tree's copy.
    HostNewer,
    /// The host file was replaced; `reload`: corosync should be told.
    Written { reload: bool },
}

/// Brings the host file up to the tree's copy.
pub fn sync(tree: Option<&[u8]>, host: &Path, notify: bool) -> std::io::Result<Outcome> {
    let Some(tree) = tree.filter(|data| !data.is_empty()) else {
        return Ok(Outcome::Unchanged);
    };
    let new_version = config_version(tree);
    if new_version == 0 {
        tracing::error!("corosync.conf in the cluster file system has no config_version");
        return Ok(Outcome::Unchanged);
    }
    let current = match std::fs::read(host) {
        Ok(data) => Some(data),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(error),
    };
    let old_version = current.as_deref().map_or(0, config_version);
    if current.as_deref() == Some(tree) {
        return Ok(Outcome::Unchanged);
    }
    if new_version < old_version {
        tracing::error!(
            old_version,
            new_version,
            "local corosync.conf is newer than the cluster's copy"
        );
        return Ok(Outcome::HostNewer);
    }
    write_atomically(host, tree)?;
    tracing::info!(
        path = %host.display(),
        old_version,
        new_version,
        "wrote new corosync config"
    );
    Ok(Outcome::Written {
        reload: notify && old_version != 0,
    })
}

fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "corosync.conf".into());
    let mut temp = tempfile::Builder::new()
        .prefix(&format!("{name}."))
        .tempfile_in(dir)?;
    temp.write_all(data)?;
    temp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|error| error.error)?;
    Ok(())
}

/// `corosync-cfgtool -R` one second later, off the loop (C sleeps 1 s first).
pub fn request_reload() {
    let spawned = std::thread::Builder::new()
        .name("pmxcfs-reload".into())
        .spawn(|| {
            std::thread::sleep(std::time::Duration::from_secs(1));
            match std::process::Command::new("corosync-cfgtool")
                .arg("-R")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
            {
                Ok(status) if status.success() => tracing::info!("corosync config reloaded"),
                Ok(status) => tracing::error!(%status, "corosync-cfgtool -R failed"),
                Err(error) => tracing::error!(%error, "cannot run corosync-cfgtool -R"),
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the corosync reload thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_as_the_c_regex_finds_them() {
        assert_eq!(config_version(b"totem {\n  config_version: 12\n}"), 12);
        assert_eq!(config_version(b"config_version:3"), 3);
        assert_eq!(config_version(b"config_version \t:\n 7 x"), 7);
        assert_eq!(config_version(b"config_version: x\nconfig_version: 5"), 5);
        assert_eq!(config_version(b"no version here"), 0);
        assert_eq!(config_version(b"config_version"), 0);
    }

    #[test]
    fn sync_follows_the_version_rules() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("corosync.conf");
        let v2 = b"totem {\n config_version: 2\n}\n";
        let v3 = b"totem {\n config_version: 3\n}\n";
        // Missing host file: written, no reload (old version 0).
        assert_eq!(
            sync(Some(v2), &host, true).unwrap(),
            Outcome::Written { reload: false }
        );
        assert_eq!(std::fs::read(&host).unwrap(), v2);
        let mode = std::fs::metadata(&host).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        // Same content: nothing.
        assert_eq!(sync(Some(v2), &host, true).unwrap(), Outcome::Unchanged);
        // Newer in the tree: written, reload when ours.
        assert_eq!(
            sync(Some(v3), &host, true).unwrap(),
            Outcome::Written { reload: true }
        );
        // Older in the tree: the host wins.
        assert_eq!(sync(Some(v2), &host, false).unwrap(), Outcome::HostNewer);
        assert_eq!(std::fs::read(&host).unwrap(), v3);
        // No version / empty / missing: nothing.
        assert_eq!(sync(Some(b"x"), &host, true).unwrap(), Outcome::Unchanged);
        assert_eq!(sync(Some(b""), &host, true).unwrap(), Outcome::Unchanged);
        assert_eq!(sync(None, &host, true).unwrap(), Outcome::Unchanged);
        // No temp files left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
