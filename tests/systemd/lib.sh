# The checks' helpers, sourced by checks.sh and cockpit-checks.sh inside the container.
pass=0
fail=0
ok() { echo "ok - $*"; pass=$((pass + 1)); }
not_ok() { echo "not ok - $*"; fail=$((fail + 1)); }
# check DESCRIPTION COMMAND...: passes when the command succeeds.
check() {
    local desc=$1
    shift
    if "$@"; then ok "$desc"; else not_ok "$desc"; fi
}
# contains DESCRIPTION NEEDLE COMMAND...: passes when the command's output contains NEEDLE.
contains() {
    local desc=$1 needle=$2 out
    shift 2
    out=$("$@" 2>&1)
    if [[ "$out" == *"$needle"* ]]; then ok "$desc"; else not_ok "$desc (wanted '$needle', got: $out)"; fi
}
# waitfor SECONDS COMMAND...: polls until the command succeeds (no readiness signal exists).
waitfor() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -ge $deadline ] && return 1
        sleep 0.2
    done
}
prop() { systemctl show -P "$1" dynplugd.service; }
as_user() { local u=$1; shift; setpriv --reuid="$u" --regid="$u" --init-groups "$@"; }
ctl() { dynplugctl "$@"; }
DEST=org.dynplug.Manager
OBJ=/org/dynplug/Manager
# summary: writes the tally and returns whether every check passed.
summary() {
    echo "$pass passed, $fail failed"
    echo "$pass passed, $fail failed" >/e2e/results/summary
    [ "$fail" = 0 ]
}
