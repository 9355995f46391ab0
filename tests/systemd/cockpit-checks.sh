#!/bin/bash
# The Cockpit page's checks, in a second boot of the throw-away container (see run.sh):
# the package installed and started afresh, then tests/systemd/cockpit.sh. Kept apart
# from checks.sh because, booted once for both, the container's systemd stopped
# answering after the browser run and never halted.
set -u
exec > >(tee /e2e/results/log) 2>&1
. /e2e/lib.sh

echo "# installing the packages"
check "dpkg -i installs the package" dpkg -i /e2e/dynplugd.deb
busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig >/dev/null
check "systemctl start returns success" systemctl start dynplugd
. /e2e/cockpit.sh
summary
