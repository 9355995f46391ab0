#!/usr/bin/env bash
# End-to-end test of the dynplugd Debian package under a REAL systemd.
#
# Boots the distribution's systemd in a throw-away container (systemd-nspawn on a
# debootstrap'ed Debian root, volatile overlay, private network, own cgroup), installs
# the package there and drives it with systemctl, busctl, journalctl and dynplugctl as
# root and as unprivileged users (tests/systemd/checks.sh). The host is not touched:
# writes land in the container's tmpfs overlay; the cgroups made here are removed.
#
# Needs root, systemd-nspawn (package systemd-container), debootstrap and cargo-deb;
# skips with a message where it cannot run.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
skip() {
    echo "SKIP systemd end-to-end tests: $*"
    exit 0
}
[ "$(id -u)" = 0 ] || skip "needs root"
command -v systemd-nspawn >/dev/null || skip "systemd-nspawn is missing (apt-get install --no-install-recommends systemd-container)"
command -v debootstrap >/dev/null || skip "debootstrap is missing (apt-get install debootstrap)"
cargo deb --version >/dev/null 2>&1 || skip "cargo-deb is missing (cargo install cargo-deb)"
[ -d /sys/fs/cgroup/systemd ] && [ -d /sys/fs/cgroup/unified ] || skip "needs the hybrid cgroup layout (name=systemd + unified) of these machines"

work="$root/target/systemd-e2e"
rootfs="$work/rootfs"
mkdir -p "$work"
# polkitd decides who may call the daemon's mutating methods (checks.sh writes rules).
if [ ! -x "$rootfs/lib/systemd/systemd" ] || [ ! -x "$rootfs/usr/bin/pkaction" ] || [ ! -x "$rootfs/usr/bin/curl" ]; then
    echo "== building a Debian root for the container (once)"
    rm -rf "$rootfs" "$rootfs.tmp"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,procps,util-linux,passwd,libpam-systemd,polkitd,curl \
        bookworm "$rootfs.tmp" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
        { tail -20 "$work/debootstrap.log"; exit 1; }
    mv "$rootfs.tmp" "$rootfs"
fi

echo "== building the package"
(cd "$root" && cargo xtask dist && cargo deb -p dynplugd --no-build --no-strip && cargo build --release -p dynplug-fixture-fault)
# The hostile plugin the checks turn loose on the packaged daemon.
${CC:-cc} -shared -fPIC -O2 -I "$root/sdk/include" -o "$work/hostile.so" "$root/tests/fixtures/c/hostile.c"
deb=$(ls -t "$root"/target/debian/dynplugd_*.deb | head -1)
dpkg-deb --contents "$deb" | awk '{print $6}' >"$work/contents.txt"
for f in ./usr/bin/dynplugd ./usr/bin/dynplugctl ./usr/lib/systemd/system/dynplugd.service \
    ./usr/share/dbus-1/system.d/org.dynplug.Manager.conf ./usr/share/dbus-1/system-services/org.dynplug.Manager.service \
    ./usr/share/polkit-1/actions/org.dynplug.policy ./usr/share/polkit-1/rules.d/60-dynplug.rules \
    ./usr/share/dynplug/keys/build.pub ./usr/lib/dynplug/plugins/echo.so.sig \
    ./usr/lib/sysusers.d/dynplug.conf ./usr/lib/tmpfiles.d/dynplug.conf ./etc/dynplug/config.yaml \
    ./usr/lib/dynplug/plugins/echo.so ./usr/lib/dynplug/plugins/rot13.so ./usr/share/man/man1/dynplugctl.1 \
    ./usr/share/man/man8/dynplugd.8 ./usr/share/bash-completion/completions/dynplugctl; do
    grep -qx "$f" "$work/contents.txt" || { echo "package lacks $f"; exit 1; }
done
echo "package $(basename "$deb"): $(wc -l <"$work/contents.txt") entries, all expected files present"

results=$(mktemp -d /tmp/dynplug-e2e.XXXXXX)
chmod 755 "$results"
cg="dynplug-e2e-$$"
cleanup() {
    # nspawn makes payload/ and supervisor/ below ours: remove the tree bottom-up, giving
    # late-reaped processes a moment to leave.
    for h in systemd unified; do
        [ -d "/sys/fs/cgroup/$h/$cg" ] || continue
        for _ in $(seq 20); do
            find "/sys/fs/cgroup/$h/$cg" -depth -type d -exec rmdir {} + 2>/dev/null
            [ -d "/sys/fs/cgroup/$h/$cg" ] || break
            sleep 0.5
        done
        if [ -d "/sys/fs/cgroup/$h/$cg" ]; then echo "warning: could not remove cgroup $h/$cg"; fi
    done
    return 0
}
# The trap must not change the script's exit status.
trap 'rc=$?; cleanup; exit $rc' EXIT

echo "== booting systemd in a container"
set +e
(
    # Own cgroups first, or nspawn leaves payload/ and supervisor/ at the hierarchy roots.
    for h in systemd unified; do
        mkdir -p "/sys/fs/cgroup/$h/$cg"
        echo "$BASHPID" >"/sys/fs/cgroup/$h/$cg/cgroup.procs"
    done
    exec timeout 900 unshare -m --propagation private sh -c '
        mount -t tmpfs tmpfs /run/systemd &&
        exec systemd-nspawn --quiet --register=no --keep-unit --private-network --console=passive \
            --system-call-filter="landlock_create_ruleset landlock_add_rule landlock_restrict_self" \
            -D "$1" --volatile=overlay \
            --bind-ro="$2":/e2e/dynplugd.deb \
            --bind-ro="$3/tests/systemd/checks.sh":/e2e/checks.sh \
            --bind-ro="$3/tests/systemd/dynplug-e2e.service":/etc/systemd/system/dynplug-e2e.service \
            --bind-ro="$3/target/release/libdynplug_fault.so":/e2e/fault.so \
            --bind-ro="$3/target/systemd-e2e/hostile.so":/e2e/hostile.so \
            --bind="$4":/e2e/results \
            -b systemd.wants=dynplug-e2e.service systemd.firstboot=no' \
        sh "$rootfs" "$deb" "$root" "$results"
)
status=$?
set -e
cat "$results/log" 2>/dev/null || echo "no log from the checks"
cp "$results"/* "$work/" 2>/dev/null || true
grep -h "Overall exposure" "$results/security.txt" 2>/dev/null || true
summary=$(cat "$results/summary" 2>/dev/null || echo "0 passed, 1 failed")
rm -rf "$results"
case "$summary" in
*" 0 failed") [ "$status" = 0 ] || { echo "container exited with $status"; exit 1; } ;;
*) echo "systemd end-to-end checks failed (container exit $status)"; exit 1 ;;
esac
