#!/usr/bin/env bash
# End-to-end test of the dynplugd Debian package under a REAL systemd.
#
# Boots the distribution's systemd in a throw-away container (systemd-nspawn on a
# debootstrap'ed Debian root, volatile overlay, private network, own cgroup), installs
# the package there and drives it with systemctl, busctl, journalctl and dynplugctl as
# root and as unprivileged users (tests/systemd/checks.sh). The host is not touched:
# writes land in the container's tmpfs overlay; the cgroups made here are removed.
#
# Also drives the Cockpit page (package cockpit-dynplug) in headless Chromium inside
# the container (tests/systemd/cockpit.sh, cockpit_browser.py).
#
# Needs root, systemd-nspawn (package systemd-container), debootstrap, dpkg-deb and
# cargo-deb, network access to the Debian archive (the container's root, with Cockpit
# and Chromium, is made once in target/systemd-e2e/rootfs, about 1 GB), and either the
# hybrid cgroup layout (name=systemd + unified) or the unified one (cgroup v2 only);
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
cg="dynplug-e2e-$$"
cgroups=()
scope=()
# The container gets a cgroup of its own below ours, in every hierarchy there is.
if [ -d /sys/fs/cgroup/systemd ] && [ -d /sys/fs/cgroup/unified ]; then
    # Hybrid (the machines this suite was written on): nspawn's payload/ and
    # supervisor/ go below ours, not at the hierarchy roots.
    cgroups=("/sys/fs/cgroup/systemd/$cg" "/sys/fs/cgroup/unified/$cg")
elif [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
    # Unified (cgroup v2 only). Under a systemd as PID 1, which owns the tree, the
    # container runs in a scope systemd delegates to us; elsewhere (a CI container) in
    # a child of the cgroup we run in.
    if [ -d /run/systemd/system ]; then
        scope=(systemd-run --scope --quiet --collect --unit="$cg" -p Delegate=yes --)
    else
        own=$(sed -n 's/^0:://p' /proc/self/cgroup)
        cgroups=("/sys/fs/cgroup${own%/}/$cg")
    fi
else
    skip "needs cgroup v2 (unified) or the hybrid layout (name=systemd + unified); /sys/fs/cgroup is neither"
fi

work="$root/target/systemd-e2e"
rootfs="$work/rootfs"
mkdir -p "$work"
# polkitd decides who may call the daemon's mutating methods (checks.sh writes rules).
if [ ! -x "$rootfs/lib/systemd/systemd" ] || [ ! -x "$rootfs/usr/bin/pkaction" ] || [ ! -x "$rootfs/usr/bin/curl" ]; then
    rm -f "$work/browser.done"
    echo "== building a Debian root for the container (once)"
    rm -rf "$rootfs" "$rootfs.tmp"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,procps,util-linux,passwd,libpam-systemd,polkitd,curl \
        bookworm "$rootfs.tmp" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
        { tail -20 "$work/debootstrap.log"; exit 1; }
    mv "$rootfs.tmp" "$rootfs"
fi
# The Cockpit page's browser test: Cockpit and Chromium with its WebDriver, from the
# Debian archive, installed into the root with apt-get (in a chroot, services not started).
browser_packages="cockpit-ws cockpit-system cockpit-bridge chromium chromium-driver python3-selenium fonts-dejavu-core"
if [ "$(cat "$work/browser.done" 2>/dev/null)" != "$browser_packages" ]; then
    echo "== adding Cockpit and Chromium to the container's root (once)"
    printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
    chmod 755 "$rootfs/usr/sbin/policy-rc.d"
    apt_root() { chroot "$rootfs" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive apt-get "$@"; }
    { apt_root update -qq && apt_root install -y -qq --no-install-recommends $browser_packages && apt_root clean; } >"$work/browser-packages.log" 2>&1 ||
        { tail -20 "$work/browser-packages.log"; rm -f "$rootfs/usr/sbin/policy-rc.d"; exit 1; }
    rm -f "$rootfs/usr/sbin/policy-rc.d"
    echo "$browser_packages" >"$work/browser.done"
fi

echo "== building the package"
(cd "$root" && cargo xtask dist && cargo deb -p dynplugd --no-build --no-strip && cargo build --release -p dynplug-fixture-fault && cargo xtask cockpit-deb)
# The hostile plugin the checks turn loose on the packaged daemon.
${CC:-cc} -shared -fPIC -O2 -I "$root/sdk/include" -o "$work/hostile.so" "$root/tests/fixtures/c/hostile.c"
# The plugin whose strings are markup, for the Cockpit page's test.
${CC:-cc} -shared -fPIC -O2 -I "$root/sdk/include" -o "$work/markup.so" "$root/tests/fixtures/c/markup.c"
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
cockpit_deb=$(ls -t "$root"/target/debian/cockpit-dynplug_*_all.deb | head -1)
for f in manifest.json index.html dynplug.js dynplug.css; do
    dpkg-deb --contents "$cockpit_deb" | awk '{print $6}' | grep -qx "./usr/share/cockpit/dynplug/$f" ||
        { echo "$(basename "$cockpit_deb") lacks /usr/share/cockpit/dynplug/$f"; exit 1; }
done

cleanup() {
    # nspawn makes payload/ and supervisor/ below ours: remove the tree bottom-up, giving
    # late-reaped processes a moment to leave.
    for dir in "${cgroups[@]}"; do
        [ -d "$dir" ] || continue
        for _ in $(seq 20); do
            find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null
            [ -d "$dir" ] || break
            sleep 0.5
        done
        if [ -d "$dir" ]; then echo "warning: could not remove cgroup $dir"; fi
    done
    return 0
}
# The trap must not change the script's exit status.
trap 'rc=$?; cleanup; exit $rc' EXIT

# boot NAME CHECKS SECONDS: boots the container once, running the script CHECKS (as
# /e2e/checks.sh, by dynplug-e2e.service) within SECONDS; prints its log and adds its
# tally to the totals. Returns non-zero when a check failed or the container did not
# halt by itself.
passed=0
failed=0
boot() {
    local name=$1 checks=$2 seconds=$3 results status summary
    cleanup
    results=$(mktemp -d /tmp/dynplug-e2e.XXXXXX)
    chmod 755 "$results"
    echo "== booting systemd in a container: $name"
    set +e
    (
        # Own cgroups first, or nspawn leaves payload/ and supervisor/ at the hierarchy roots.
        for dir in "${cgroups[@]}"; do
            mkdir -p "$dir"
            echo "$BASHPID" >"$dir/cgroup.procs"
        done
        exec "${scope[@]}" timeout "$seconds" unshare -m --propagation private sh -c '
            mount -t tmpfs tmpfs /run/systemd &&
            exec systemd-nspawn --quiet --register=no --keep-unit --private-network --console=passive \
                --system-call-filter="landlock_create_ruleset landlock_add_rule landlock_restrict_self" \
                -D "$1" --volatile=overlay \
                --bind-ro="$2":/e2e/dynplugd.deb \
                --bind-ro="$6":/e2e/checks.sh \
                --bind-ro="$3/tests/systemd/lib.sh":/e2e/lib.sh \
                --bind-ro="$3/tests/systemd/dynplug-e2e.service":/etc/systemd/system/dynplug-e2e.service \
                --bind-ro="$3/target/release/libdynplug_fault.so":/e2e/fault.so \
                --bind-ro="$3/target/systemd-e2e/hostile.so":/e2e/hostile.so \
                --bind-ro="$3/target/systemd-e2e/markup.so":/e2e/markup.so \
                --bind-ro="$5":/e2e/cockpit-dynplug.deb \
                --bind-ro="$3/tests/systemd/cockpit.sh":/e2e/cockpit.sh \
                --bind-ro="$3/tests/systemd/cockpit_browser.py":/e2e/cockpit_browser.py \
                --bind="$4":/e2e/results \
                -b systemd.wants=dynplug-e2e.service systemd.firstboot=no' \
            sh "$rootfs" "$deb" "$root" "$results" "$cockpit_deb" "$checks"
    )
    status=$?
    set -e
    cat "$results/log" 2>/dev/null || echo "no log from the checks"
    mkdir -p "$work/$name"
    cp -r "$results"/* "$work/$name/" 2>/dev/null || true
    summary=$(cat "$results/summary" 2>/dev/null || echo "0 passed, 1 failed")
    rm -rf "$results"
    passed=$((passed + ${summary%% passed*}))
    failed=$((failed + $(echo "$summary" | sed 's/.* \([0-9]*\) failed/\1/')))
    case "$summary" in
    *" 0 failed") [ "$status" = 0 ] || { echo "$name: the container did not end by itself (exit $status)"; return 1; } ;;
    *) echo "$name: checks failed (container exit $status)"; return 1 ;;
    esac
}

rc=0
boot package "$root/tests/systemd/checks.sh" 900 || rc=1
grep -h "Overall exposure" "$work/package/security.txt" 2>/dev/null || true
boot cockpit "$root/tests/systemd/cockpit-checks.sh" 420 || rc=1
if [ -d "$work/cockpit/screenshots" ]; then echo "screenshots of the Cockpit page: $work/cockpit/screenshots"; fi
echo "systemd end-to-end checks: $passed passed, $failed failed"
exit $rc
