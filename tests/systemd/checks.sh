#!/bin/bash
# End-to-end checks of the dynplugd Debian package under a real systemd. Runs inside a
# throw-away container (see run.sh) as root; writes its log to /e2e/results.
set -u
exec > >(tee /e2e/results/log) 2>&1

. /e2e/lib.sh

echo "# installing the package"
check "dpkg -i installs the package" dpkg -i /e2e/dynplugd.deb
check "dynplug group created by sysusers" getent group dynplug
check "unit installed" test -f /usr/lib/systemd/system/dynplugd.service
check "policy installed" test -f /usr/share/dbus-1/system.d/org.dynplug.Manager.conf
check "plugins installed root-owned, 0644" test "$(stat -c '%U %a' /usr/lib/dynplug/plugins/echo.so)" = "root 644"
check "man page installed" test -f /usr/share/man/man1/dynplugctl.1
busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig >/dev/null
check "polkit actions installed" pkaction --action-id org.dynplug.execute
check "polkit install action installed" pkaction --action-id org.dynplug.install
check "polkit rules installed" test -f /usr/share/polkit-1/rules.d/60-dynplug.rules
# The checks' own polkit rules (not the package's): group ops may run hash and nothing
# else, and may cancel anyone's job; reloading needs admin authentication, whoever asks.
groupadd ops
cat >/etc/polkit-1/rules.d/10-e2e-ops.rules <<'RULES'
polkit.addRule(function (action, subject) {
    if (action.id == "org.dynplug.execute" && subject.isInGroup("ops")) {
        return action.lookup("plugin") == "hash" ? polkit.Result.YES : polkit.Result.NO;
    }
    if (action.id == "org.dynplug.jobs.cancel-any" && subject.isInGroup("ops")) {
        return polkit.Result.YES;
    }
});
RULES
cat >/etc/polkit-1/rules.d/20-e2e-reload.rules <<'RULES'
polkit.addRule(function (action, subject) {
    if (action.id == "org.dynplug.manage" && action.lookup("verb") == "reload") {
        return polkit.Result.AUTH_ADMIN;
    }
});
RULES

echo "# start and readiness"
check "systemctl start returns success" systemctl start dynplugd
check "active right after start (READY=1 was sent)" test "$(prop ActiveState)" = active
contains "STATUS= line shown by systemctl status" "8 plugins, 8 enabled, 0 failed" systemctl status dynplugd --no-pager
contains "journal has the daemon's lines" "ready" journalctl -u dynplugd --no-pager
contains "the daemon authorizes with polkit" "authorizing mutating calls with polkit" journalctl -u dynplugd --no-pager

echo "# busctl and dynplugctl as root"
contains "busctl tree shows plugin objects" "/org/dynplug/Manager/plugins/rot13" busctl --system tree $DEST
contains "busctl introspect shows the interface" "ListPlugins" busctl --system introspect $DEST $OBJ
contains "busctl call Execute" 's "HELLO"' busctl --system call $DEST $OBJ $DEST Execute ss text hello
contains "dynplugctl list" "heartbeat" ctl list
contains "dynplugctl execute" "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" ctl execute hash abc
contains "dynplugctl disable" "hash: disabled" ctl disable hash
contains "dynplugctl enable" "hash: enabled" ctl enable hash
contains "structured journal field DYNPLUG_PLUGIN" "plugin enabled" journalctl DYNPLUG_PLUGIN=hash --no-pager

echo "# jobs, and a plugin's own log lines"
job=$(busctl --system call $DEST $OBJ $DEST StartJob ss count 12 | cut -d'"' -f2)
check "StartJob returns a job object" test -n "$job"
contains "busctl sees the job object" "$job" busctl --system tree $DEST
contains "dynplugctl follows the job to its output" "12" ctl job "$job" --wait
contains "the job's state" 's "succeeded"' busctl --system get-property $DEST "$job" org.dynplug.Job State
check "a plugin's log line is in the journal under its name (DYNPLUG_PLUGIN)" waitfor 10 sh -c 'journalctl -u dynplugd DYNPLUG_PLUGIN=count --no-pager | grep -q "step 10 of 12"'
contains "dynplugctl execute runs a job" "3" ctl execute count 3

echo "# unprivileged users"
useradd --no-create-home alice
useradd --no-create-home -G dynplug bob
contains "alice may list" "echo" as_user alice dynplugctl list
contains "alice may read properties" 'u 8' as_user alice busctl --system get-property $DEST $OBJ $DEST PluginCount
out=$(as_user alice dynplugctl execute echo x 2>&1); code=$?
check "alice may not execute (exit 4)" test "$code" = 4
contains "dynplugctl tells alice what to do" "dynplug" echo "$out"
contains "dynplugctl names the action alice lacks" "org.dynplug.execute" echo "$out"
contains "busctl as alice: polkit refuses org.dynplug.manage" "not authorized: org.dynplug.manage (disable of plugin \`echo\`)" as_user alice busctl --system call $DEST $OBJ $DEST DisablePlugin s echo
contains "alice may not reload" "org.dynplug.manage" as_user alice dynplugctl reload
contains "bob (group dynplug) may execute" "x" as_user bob dynplugctl execute echo x
contains "bob may disable" "json: disabled" as_user bob dynplugctl disable json
contains "alice may list jobs" "count" as_user alice dynplugctl jobs
contains "alice may not start jobs" "not authorized: org.dynplug.execute" as_user alice busctl --system call $DEST $OBJ $DEST StartJob ss count 1
bobs=$(as_user bob busctl --system call $DEST $OBJ $DEST StartJob ss count 600 | cut -d'"' -f2)
contains "root's job cannot be cancelled by bob" "org.dynplug.jobs.cancel-any" as_user bob busctl --system call $DEST "$job" org.dynplug.Job Cancel
contains "nor its output read by bob" "only the user who started the job" as_user bob busctl --system get-property $DEST "$job" org.dynplug.Job Output
contains "whose state is open to all" 's "succeeded"' as_user alice busctl --system get-property $DEST "$job" org.dynplug.Job State
check "bob cancels his own job" as_user bob busctl --system call $DEST "$bobs" org.dynplug.Job Cancel
contains "bob's job ends cancelled" "cancelled" ctl job "$bobs" --wait
ctl enable json >/dev/null

echo "# polkit rules of the admin's own (group ops: hash only)"
useradd --no-create-home -G ops olga
contains "olga (ops) may run hash" "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" as_user olga dynplugctl execute hash abc
contains "olga may run hash through its object too" "ba7816bf" as_user olga busctl --system call $DEST $OBJ/plugins/hash org.dynplug.Plugin Execute s abc
out=$(as_user olga dynplugctl execute text abc 2>&1); code=$?
check "olga may not run text (exit 4)" test "$code" = 4
contains "the denial names the action and plugin" "org.dynplug.execute (start-job of plugin \`text\`)" echo "$out"
contains "the D-Bus error is org.dynplug.Error.AccessDenied" "Error org.dynplug.Error.AccessDenied" \
    as_user olga dbus-send --system --print-reply --dest=$DEST $OBJ $DEST.Execute string:text string:abc
out=$(as_user olga dynplugctl disable hash 2>&1); code=$?
check "olga may not disable hash (exit 4)" test "$code" = 4
contains "that denial names org.dynplug.manage" "org.dynplug.manage" echo "$out"
contains "hash is still enabled" "true" busctl --system get-property $DEST $OBJ/plugins/hash org.dynplug.Plugin Enabled
contains "olga may not enable either" "org.dynplug.manage" as_user olga busctl --system call $DEST $OBJ $DEST EnablePlugin s hash
bobs=$(as_user bob busctl --system call $DEST $OBJ $DEST StartJob ss count 600 | cut -d'"' -f2)
check "olga (granted org.dynplug.jobs.cancel-any) cancels bob's job" as_user olga dynplugctl cancel "$bobs"
contains "bob's job ends cancelled by her" "cancelled" ctl job "$bobs" --wait
out=$(as_user bob dynplugctl reload 2>&1); code=$?
check "a rule asking admin authentication for reload stops bob (exit 4)" test "$code" = 4
contains "bob is told it needs authentication" "needs authentication" echo "$out"
contains "--no-ask-password gives the same answer" "needs authentication" as_user bob dynplugctl --no-ask-password reload
contains "busctl (interactive allowed, no agent) is refused too" "needs authentication" as_user bob busctl --system call $DEST $OBJ $DEST Reload
contains "bob still disables (the reload rule names its verb only)" "echo: disabled" as_user bob dynplugctl disable echo
contains "root reloads without asking" "configuration reloaded" ctl reload
# In a login session of bob's (PAM, pam_systemd) and on a terminal (script), dynplugctl
# starts a text agent for the session, and polkit asks it for the admin password. No
# password ever comes: the unit is stopped after 10 s, and its output must show the
# prompt by then.
contains "on a terminal in a session dynplugctl runs a polkit agent, which asks for authentication" "AUTHENTICATING FOR org.dynplug.manage" \
    timeout 60 systemd-run --quiet --wait --pipe --collect -p User=bob -p PAMName=login -p RuntimeMaxSec=10 \
    script -qec "dynplugctl reload" /dev/null </dev/null
rm /etc/polkit-1/rules.d/10-e2e-ops.rules
check "with the ops rule removed, olga's next call is refused (nothing cached)" \
    waitfor 10 sh -c '! setpriv --reuid=olga --regid=olga --init-groups dynplugctl execute hash abc'
ctl enable echo >/dev/null

echo "# without polkit the daemon applies the old rule itself"
systemctl stop dynplugd
mv /usr/share/dbus-1/system-services/org.freedesktop.PolicyKit1.service /root/
systemctl stop polkit
busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig >/dev/null
check "restart without polkit" systemctl start dynplugd
contains "the daemon says polkit is not running" "polkit is not running" journalctl -u dynplugd --no-pager
contains "bob (group dynplug) may execute" "x" as_user bob dynplugctl execute echo x
out=$(as_user olga dynplugctl execute hash abc 2>&1); code=$?
check "olga may not, without polkit (exit 4)" test "$code" = 4
contains "she is told only root and the dynplug group may" "only root and members of the \`dynplug\` group" echo "$out"
contains "root may" "HELLO" busctl --system call $DEST $OBJ $DEST Execute ss text hello
systemctl stop dynplugd
mv /root/org.freedesktop.PolicyKit1.service /usr/share/dbus-1/system-services/
busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig >/dev/null
check "restart with polkit" systemctl start dynplugd

echo "# reload"
sed -i 's/mode: upper .*/mode: reverse/' /etc/dynplug/config.yaml
check "systemctl reload succeeds" systemctl reload dynplugd
check "reloaded configuration applied" waitfor 10 sh -c '[ "$(dynplugctl execute text abc)" = cba ]'
cp /etc/dynplug/config.yaml /tmp/config.good
echo "plugins: [broken" >>/etc/dynplug/config.yaml
systemctl reload dynplugd
check "broken config: reload failure visible in STATUS" waitfor 10 sh -c 'systemctl show -P StatusText dynplugd | grep -q "last reload failed"'
check "broken config: still active" test "$(prop ActiveState)" = active
contains "broken config: old config still in force" "cba" ctl execute text abc
contains "broken config: error in the journal" "reload refused" journalctl -u dynplugd --no-pager
out=$(ctl reload 2>&1); code=$?
check "dynplugctl reload exits 9 on a broken config" test "$code" = 9
cp /tmp/config.good /etc/dynplug/config.yaml
systemctl reload dynplugd

echo "# persistence across restarts"
ctl disable rot13 >/dev/null
check "restart succeeds" systemctl restart dynplugd
contains "rot13 still disabled after restart" "false" busctl --system get-property $DEST $OBJ/plugins/rot13 org.dynplug.Plugin Enabled
ctl enable rot13 >/dev/null

echo "# D-Bus activation"
systemctl stop dynplugd
check "stopped" test "$(prop ActiveState)" = inactive
contains "a busctl call starts the daemon and gets its answer" 'u 8' busctl --system get-property $DEST $OBJ $DEST PluginCount
check "activated by the call" test "$(prop ActiveState)" = active

echo "# REST tokens of each scope, from systemd credentials"
cp /etc/dynplug/config.yaml /tmp/config.before-rest
for t in read hash manage metrics; do head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >/etc/dynplug/token-$t; done
chmod 600 /etc/dynplug/token-*
mkdir -p /etc/systemd/system/dynplugd.service.d
cat >/etc/systemd/system/dynplugd.service.d/tokens.conf <<'UNIT'
[Service]
LoadCredential=api-read:/etc/dynplug/token-read
LoadCredential=api-hash:/etc/dynplug/token-hash
LoadCredential=api-manage:/etc/dynplug/token-manage
LoadCredential=api-metrics:/etc/dynplug/token-metrics
UNIT
sed -i 's/^server:$/server:\n  tokens:\n    - {file: api-read, scope: read}\n    - {file: api-hash, scope: execute, plugins: [hash]}\n    - {file: api-manage, scope: manage}\n  metrics_token_file: api-metrics/' /etc/dynplug/config.yaml
sed -i '/^server:/,/^jobs:/{s/^  enabled: false/  enabled: true/;s/^  port: 8080 /  port: 8089 /}' /etc/dynplug/config.yaml
systemctl daemon-reload
check "restart with the REST API and four tokens" systemctl restart dynplugd
api() { local token=$1; shift; curl -s -w ' HTTP %{http_code}' -H "Authorization: Bearer $(cat /etc/dynplug/token-$token 2>/dev/null)" "$@"; }
U=http://127.0.0.1:8089
contains "no token: 401" "HTTP 401" curl -s -w ' HTTP %{http_code}' -X POST -H "Content-Type: text/plain" -d abc $U/plugins/hash/execute
contains "read token lists plugins" "HTTP 200" api read $U/plugins
contains "read token may not execute: 403 naming the scope" "needs a token with the \`execute\` scope; this one has \`read\`" api read -X POST -H "Content-Type: text/plain" -d abc $U/plugins/hash/execute
contains "hash token runs hash" "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" api hash -X POST -H "Content-Type: text/plain" -d abc $U/plugins/hash/execute
contains "hash token may not run text: 403" "this token may not run plugin \`text\`" api hash -X POST -H "Content-Type: text/plain" -d abc $U/plugins/text/execute
contains "hash token may not disable: 403 naming manage" "\`manage\` scope" api hash -X PUT $U/plugins/hash/disable
contains "manage token disables" "HTTP 200" api manage -X PUT $U/plugins/echo/disable
contains "manage token enables" "HTTP 200" api manage -X PUT $U/plugins/echo/enable
contains "metrics token reads /metrics" "dynplug_" api metrics $U/metrics
contains "/metrics without a token: 401" "HTTP 401" curl -s -w ' HTTP %{http_code}' $U/metrics
contains "the hash token does not open /metrics" "HTTP 403" api hash $U/metrics
check "no token in the journal" sh -c "! journalctl -u dynplugd --no-pager | grep -q -F \"\$(cat /etc/dynplug/token-hash)\""
cp /tmp/config.before-rest /etc/dynplug/config.yaml
rm -r /etc/systemd/system/dynplugd.service.d
systemctl daemon-reload
check "restart without the REST API" systemctl restart dynplugd

echo "# signed plugins (the package's are signed by the build key)"
check "the package ships the plugins' signatures" test -f /usr/lib/dynplug/plugins/echo.so.sig
check "and the build's public key" test -f /usr/share/dynplug/keys/build.pub
contains "inspect shows no trusted key yet" "no trusted keys" dynplugctl inspect /usr/lib/dynplug/plugins/echo.so
install -d -m 0755 /etc/dynplug/keys
install -m 0644 /usr/share/dynplug/keys/build.pub /etc/dynplug/keys/build.pub
cp /etc/dynplug/config.yaml /tmp/config.before-trust
printf 'trust:\n  signatures: enforcing\n' >>/etc/dynplug/config.yaml
contains "inspect verifies a packaged plugin" "verified (key build)" dynplugctl inspect /usr/lib/dynplug/plugins/rot13.so
contains "reload with signatures enforced" "configuration reloaded" ctl reload
contains "every packaged plugin is verified" "verified (key build)" ctl info heartbeat
contains "none failed" "8 plugins, 8 enabled, 0 failed" systemctl status dynplugd --no-pager
install -m 0644 /e2e/hostile.so /usr/lib/dynplug/plugins/zz-unsigned.so
cp /usr/lib/dynplug/plugins/echo.so /tmp/echo-tampered.so && printf x >>/tmp/echo-tampered.so
install -m 0644 /tmp/echo-tampered.so /usr/lib/dynplug/plugins/zz-tampered.so
install -m 0644 /usr/lib/dynplug/plugins/echo.so.sig /usr/lib/dynplug/plugins/zz-tampered.so.sig
ctl reload >/dev/null
contains "an unsigned plugin is refused under enforcing" "unsigned" ctl info zz-unsigned.so
contains "a modified one, with the original's signature, too" "does not verify" ctl info zz-tampered.so
contains "the signed ones still serve" "ba7816bf" ctl execute hash abc
sed -i 's/signatures: enforcing/signatures: permissive/' /etc/dynplug/config.yaml
ctl reload >/dev/null
contains "permissive loads the unsigned one, marked" "unsigned" ctl info hostile
check "and the daemon's status says so" waitfor 10 sh -c 'systemctl show -P StatusText dynplugd | grep -q "1 not verified"'
rm /usr/lib/dynplug/plugins/zz-unsigned.so /usr/lib/dynplug/plugins/zz-tampered.so*
cp /tmp/config.before-trust /etc/dynplug/config.yaml
contains "back to the packaged configuration" "configuration reloaded" ctl reload

echo "# an isolated plugin under the hardened unit"
install -m 0644 /e2e/fault.so /usr/lib/dynplug/plugins/fault.so
cp /etc/dynplug/config.yaml /tmp/config.before-isolation
printf '  fault:\n    isolation: process\n    memory_limit_mb: 256\n' >>/etc/dynplug/config.yaml
systemctl reload dynplugd
check "reload with an isolated plugin" waitfor 10 busctl --system get-property $DEST $OBJ/plugins/fault org.dynplug.Plugin Loaded
contains "the isolated plugin answers" 's "hi"' busctl --system call $DEST $OBJ $DEST Execute ss fault hi
contains "its worker's crash is reported with the signal" "SIGSEGV" busctl --system call $DEST $OBJ $DEST Execute ss fault segv
check "the daemon is still active after the crash" test "$(prop ActiveState)" = active
check "the worker comes back" waitfor 10 sh -c '[ "$(busctl --system call org.dynplug.Manager /org/dynplug/Manager org.dynplug.Manager Execute ss fault again)" = "s \"again\"" ]'
contains "the crash is in the journal with its fields" "DYNPLUG_ERROR=plugin \`fault\` crashed: worker killed by SIGSEGV" journalctl -u dynplugd DYNPLUG_PLUGIN=fault -o verbose --no-pager
cp /tmp/config.before-isolation /etc/dynplug/config.yaml
systemctl reload dynplugd

echo "# a hostile isolated plugin under the hardened unit"
check "worker user created by sysusers" getent passwd dynplug-worker
install -m 0644 /e2e/hostile.so /usr/lib/dynplug/plugins/hostile.so
printf '  hostile:\n    isolation: process\n    timeout_ms: 5000\n' >>/etc/dynplug/config.yaml
systemctl reload dynplugd
check "reload with the hostile plugin" waitfor 10 busctl --system get-property $DEST $OBJ/plugins/hostile org.dynplug.Plugin Loaded
hostile() { busctl --system call $DEST $OBJ $DEST Execute ss hostile "$*" 2>&1; }
contains "the hostile plugin answers" 's "hi"' hostile echo hi
contains "its worker (the dynplug-worker program) runs as a uid of the plugin's own" "18791" ps -o uid= -C dynplug-worker
info=$(ctl info hostile)
for layer in identity process_tree filesystem syscalls; do
    contains "sandbox layer $layer enforced under the unit" "$layer: enforced" echo "$info"
done
contains "network blocked under the unit" "network: blocked" echo "$info"
main=$(prop MainPID)
contains "cannot kill the daemon" "denied" hostile kill "$main"
hostile kill 0 >/dev/null  # its parent is the namespace's init, which ignores it
check "killing its parent leaves the daemon alone" test "$(prop MainPID)" = "$main"
contains "the worker survives as well" 's "again"' hostile echo again
# Its worker runs as another user, so ProtectProc=invisible hides its /proc entry from
# the daemon: the figures are the worker's own reports.
worker_figures() {
    local out
    out=$(busctl --system call $DEST $OBJ $DEST GetPlugin s hostile)
    [[ "$out" =~ \"WorkerCpuUsec\"\ t\ [1-9] ]] && [[ "$out" =~ \"WorkerRssBytes\"\ t\ [1-9] ]]
}
check "the worker's CPU and memory are not 0 under ProtectProc=invisible" worker_figures
contains "dynplugctl top --once --json works under the unit" '"rss_bytes"' ctl --json top --once --interval 0.2
contains "cannot ptrace the daemon" "denied" hostile ptrace "$main"
contains "cannot read the daemon's environment" "denied" hostile read "/proc/$main/environ"
contains "cannot read config.yaml" "denied" hostile read /etc/dynplug/config.yaml
contains "cannot write config.yaml" "denied" hostile write /etc/dynplug/config.yaml
contains "cannot list the state directory" "denied" hostile list /var/lib/dynplug
contains "cannot open a network socket" "denied EPERM" hostile socket
contains "cannot make namespaces" "denied EPERM" hostile unshare
contains "a raised SIGSEGV is a crash with the signal named" "SIGSEGV" hostile raise 11
contains "its orphan is started" "ok forked" hostile orphan
check "the orphan runs" waitfor 5 pgrep -x dynplug-orphan
contains "its worker is killed" "SIGKILL" hostile raise 9
check "the orphan dies with its worker" waitfor 10 sh -c '! pgrep -x dynplug-orphan'
contains "a hanging call times out" "did not answer" hostile hang
check "the timed-out worker is killed by the daemon" waitfor 10 sh -c '! pgrep -x dynplug-hang'
contains "an answer over max_output_bytes is refused" "max_output_bytes" hostile big 20000000
check "the daemon is still active" test "$(prop ActiveState)" = active
check "the daemon is the same process" test "$(prop MainPID)" = "$main"
check "the unit raises the descriptor limit" test "$(prop LimitNOFILE)" = 65536
contains "others keep answering" 's "ok"' busctl --system call $DEST $OBJ $DEST Execute ss echo ok
cp /tmp/config.before-isolation /etc/dynplug/config.yaml
rm /usr/lib/dynplug/plugins/hostile.so
systemctl reload dynplugd

echo "# stop with calls in flight"
install -m 0644 /e2e/fault.so /usr/lib/dynplug/plugins/fault.so
systemctl reload dynplugd
waitfor 10 busctl --system get-property $DEST $OBJ/plugins/fault org.dynplug.Plugin Loaded
busctl --system --timeout=30 call $DEST $OBJ $DEST Execute ss fault "sleep 2000" >/tmp/inflight.out 2>&1 &
caller=$!
waitfor 10 sh -c '[ "$(busctl --system get-property org.dynplug.Manager /org/dynplug/Manager org.dynplug.Manager CallsInFlight)" = "u 1" ]'
check "systemctl stop with a call in flight succeeds" systemctl stop dynplugd
wait $caller
contains "the call in flight got its answer" "woke up" cat /tmp/inflight.out
check "stopped cleanly, not failed" test "$(prop Result)" = success
rm /usr/lib/dynplug/plugins/fault.so

echo "# watchdog"
mkdir -p /run/systemd/system/dynplugd.service.d
printf '[Service]\nWatchdogSec=2s\n' >/run/systemd/system/dynplugd.service.d/watchdog.conf
systemctl daemon-reload
systemctl start dynplugd
before=$(prop NRestarts)
kill -STOP "$(prop MainPID)"
check "a frozen daemon is restarted by the watchdog" waitfor 30 sh -c "[ \"\$(systemctl show -P NRestarts dynplugd)\" -gt $before ]"
contains "the journal says why" "Watchdog timeout" journalctl -u dynplugd --no-pager
check "active again after the restart" waitfor 20 sh -c '[ "$(systemctl show -P ActiveState dynplugd)" = active ]'
rm -r /run/systemd/system/dynplugd.service.d
systemctl daemon-reload

echo "# hardening"
systemd-analyze security dynplugd.service --no-pager >/e2e/results/security.txt 2>&1
score=$(grep -o 'Overall exposure level for dynplugd.service: [0-9.]* [A-Z]*' /e2e/results/security.txt)
echo "# $score"
check "systemd-analyze security gives a score" test -n "$score"

journalctl --no-pager -u dynplugd >/e2e/results/journal.txt 2>&1
summary
