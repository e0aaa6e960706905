#!/bin/sh
# install-purge.sh DEB WORK C-CONFIG-DB - the package's life on a stand-in Proxmox VE node,
# in a scratch root: an overlay over / (changes land in WORK/upper) in a private mount
# namespace, entered with chroot. Run by tests/package.rs; prints what it checks.
#
# The node has pve-cluster's /usr/bin/pmxcfs (a stand-in script), its unit (the contract in
# pve-cluster.service next to this script) and the C daemon's config.db. Then: dpkg -i,
# the diversion and the files, the optional Type=notify drop-in through systemd-analyze
# verify, a store made from config.db, dpkg -r (the tree exported back, the C binary back),
# dpkg -P (no diversion left).
set -eu
[ $# -eq 3 ] || { echo "usage: $0 DEB WORK C-CONFIG-DB" >&2; exit 2; }
DEB=$(readlink -f "$1")
WORK=$2
C_DB=$(readlink -f "$3")
HERE=$(cd "$(dirname "$0")" && pwd)

exec unshare -m --propagation private sh -eu -c '
DEB=$1 WORK=$2 C_DB=$3 HERE=$4
R=$WORK/root
mkdir -p "$WORK/upper" "$WORK/work" "$R"
mount -t overlay pkgtest -o "lowerdir=/,upperdir=$WORK/upper,workdir=$WORK/work" "$R"
mount --bind /proc "$R/proc"
mount --bind /dev "$R/dev"
in_root() { chroot "$R" "$@"; }

# The stand-in node.
printf "#!/bin/sh\necho C pmxcfs \"\$@\"\n" > "$R/usr/bin/pmxcfs"
chmod 755 "$R/usr/bin/pmxcfs"
mkdir -p "$R/var/lib/pve-cluster" "$R/etc/systemd/system"
cp "$C_DB" "$R/var/lib/pve-cluster/config.db"
cp "$HERE/pve-cluster.service" "$R/etc/systemd/system/pve-cluster.service"
cp "$DEB" "$R/tmp/pmxcfs-rs.deb"

in_root dpkg -i /tmp/pmxcfs-rs.deb
echo "diversion: $(in_root dpkg-divert --list /usr/bin/pmxcfs)"
echo "diverted C binary says: $(in_root /usr/bin/pmxcfs.c-daemon)"
in_root /usr/bin/pmxcfs help | head -n 1 | sed "s/^/ours says: /"
echo "files: $(in_root dpkg -L pmxcfs-rs | grep -E "^/usr/(bin|share/pmxcfs-rs)/." | tr "\n" " ")"

# The unit with the offered drop-in.
mkdir -p "$R/etc/systemd/system/pve-cluster.service.d"
ln -s /usr/share/pmxcfs-rs/pve-cluster-notify.conf \
    "$R/etc/systemd/system/pve-cluster.service.d/notify.conf"
in_root systemd-analyze verify /etc/systemd/system/pve-cluster.service
echo "unit verified"
in_root systemd-analyze cat-config systemd/system/pve-cluster.service.d/notify.conf \
    | grep -E "^(Type|ExecStart)=" | tr "\n" " " | sed "s/^/drop-in: /"
echo
rm -r "$R/etc/systemd/system/pve-cluster.service.d"

# As the daemon'"'"'s first start does: the C database into the store.
in_root /usr/bin/pmxcfs import-db --sqlite /var/lib/pve-cluster/config.db \
    --data-dir /var/lib/pve-cluster
in_root dpkg -r pmxcfs-rs
echo "after remove the binary says: $(in_root /usr/bin/pmxcfs)"
ls "$R/var/lib/pve-cluster" | tr "\n" " " | sed "s/^/data dir: /"
echo
in_root dpkg -P pmxcfs-rs
echo "diversions left: $(in_root dpkg-divert --list | grep -c pmxcfs-rs || true)"
echo "after purge the binary says: $(in_root /usr/bin/pmxcfs)"
umount "$R/dev" "$R/proc" "$R"
' install-purge "$DEB" "$WORK" "$C_DB" "$HERE"
