# The Cockpit page (package cockpit-dynplug), driven in headless Chromium through
# Cockpit's own login page. Sourced by checks.sh inside the container (uses its check,
# contains, waitfor, ok and not_ok); the browser steps are in cockpit_browser.py.
echo "# the Cockpit page, in a real browser"
check "cockpit-dynplug installs" dpkg -i /e2e/cockpit-dynplug.deb
check "the page is where Cockpit looks for it" test -f /usr/share/cockpit/dynplug/manifest.json
# A plugin whose description, events, output and errors are markup.
install -m 0644 /e2e/markup.so /usr/lib/dynplug/plugins/markup.so
contains "the markup plugin loads" "configuration reloaded" ctl reload
# The page acts under the packaged polkit rule: the checks' own rule asking admin
# authentication for reload (written above) would refuse carol's Reload.
rm -f /etc/polkit-1/rules.d/20-e2e-reload.rules
# Password users: carol may manage dynplugd (group dynplug), dave may not.
useradd --create-home -G dynplug carol
useradd --create-home dave
carol_pw=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
dave_pw=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf 'carol:%s\ndave:%s\n' "$carol_pw" "$dave_pw" | chpasswd
# Plain HTTP on the container's loopback (there is no other network inside).
mkdir -p /etc/cockpit
printf '[WebService]\nAllowUnencrypted = true\n' >/etc/cockpit/cockpit.conf
check "cockpit.socket starts" systemctl start cockpit.socket
check "Cockpit answers on 127.0.0.1:9090" waitfor 30 curl -sf -o /dev/null http://127.0.0.1:9090/
mkdir -p /e2e/results/screenshots
# Selenium reaches chromedriver at "localhost"; debootstrap's root has no /etc/hosts.
grep -qw localhost /etc/hosts 2>/dev/null || echo "127.0.0.1 localhost" >>/etc/hosts
timeout 300 /usr/bin/python3 /e2e/cockpit_browser.py /e2e/results/screenshots carol "$carol_pw" dave "$dave_pw" \
    >/e2e/results/cockpit-browser.log 2>&1
code=$?
while IFS= read -r line; do
    case "$line" in
    "ok - "*) ok "cockpit: ${line#ok - }" ;;
    "not ok - "*) not_ok "cockpit: ${line#not ok - }" ;;
    *) echo "# $line" ;;
    esac
done </e2e/results/cockpit-browser.log
check "the browser run ends successfully (exit $code)" test "$code" = 0
journalctl -u cockpit --no-pager >/e2e/results/cockpit-journal.txt 2>&1
# End the users' Cockpit sessions and Cockpit itself, so nothing of theirs is left to
# hold up the container's halt.
loginctl terminate-user carol dave 2>/dev/null
systemctl stop --no-block cockpit.socket cockpit.service
rm /usr/lib/dynplug/plugins/markup.so
ctl reload >/dev/null
