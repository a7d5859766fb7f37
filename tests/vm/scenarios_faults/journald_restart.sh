#!/bin/sh
# journald stopped, killed and restarted while the daemon writes records (full VM: systemd as PID 1).
#
# The payload folder holds site/ (remediator and its pure-Python/manylinux dependencies from the
# host's venv; the image has python3, python3-yaml and python3-systemd). The daemon runs as a
# Type=notify transient unit with log_target journal. Records come from cgroup churn under a
# selected parent (WATCH_STARTED / WATCH_ENDED, one pair per cgroup) while journald is restarted,
# stopped for a while, and killed with SIGKILL. Left in the payload folder for the host:
# events.txt (what was done when, CLOCK_REALTIME microseconds), show-*.txt (systemctl show of
# the daemon's unit), churned.txt; the harness adds journal.json (journalctl -b -o json).
set -u
cd /payload
UNIT=remediator-jtest
ETC=/etc/remediator-jtest
PARENT=/sys/fs/cgroup/jtest.slice
now() { date +%s%6N; }
event() { echo "$1 $(now)" >> events.txt; }

: > events.txt
mkdir -p "$ETC/policies.d"
cat > "$ETC/policies.d/jtest.yaml" <<'EOF'
target: {kind: cgroups, include: ["jtest.slice/*"]}
trigger: {pressure: some, stall_ms: 200, window_ms: 2000}
actions: [{kind: reclaim}]
EOF
cat > "$ETC/remediator.yaml" <<EOF
policies_dir: $ETC/policies.d
state_file: /run/$UNIT/state.json
log_target: journal
rescan_interval_sec: 1
EOF
chmod 0755 "$ETC" "$ETC/policies.d"
chmod 0644 "$ETC/remediator.yaml" "$ETC/policies.d/jtest.yaml"
mkdir -p "$PARENT"
echo "+memory" > "$PARENT/cgroup.subtree_control"

# A generous start timeout: under TCG on a busy host the first start can take minutes.
systemd-run --unit="$UNIT" -p Type=notify -p NotifyAccess=main -p TimeoutStartSec=600 -p RuntimeDirectory="$UNIT" \
    -p RuntimeDirectoryMode=0700 --setenv=PYTHONPATH=/payload/site \
    /usr/bin/python3 -m remediator --config "$ETC/remediator.yaml" run
event started
systemctl show "$UNIT" -p MainPID -p NRestarts -p ActiveState > show-before.txt

# Churn in the background: a cgroup every 0.25 s, each living 1.5 s (long enough to be watched).
(
    n=0
    while [ ! -e stop-churn ]; do
        mkdir "$PARENT/c$n"
        old=$((n - 6))
        [ $old -ge 0 ] && rmdir "$PARENT/c$old"
        n=$((n + 1))
        sleep 0.25
    done
    echo "$n" > churned.txt
) &
churn=$!

sleep 5
event restart-1
systemctl restart systemd-journald
sleep 5
event stop
systemctl stop systemd-journald.service
sleep 4
event start
systemctl start systemd-journald.service
sleep 5
event kill
systemctl kill -s KILL systemd-journald.service
sleep 6
event restart-2
systemctl restart systemd-journald
sleep 6
event end-of-faults
touch stop-churn
wait $churn
for d in "$PARENT"/c*; do rmdir "$d" 2>/dev/null; done
sleep 3
systemctl show "$UNIT" -p MainPID -p NRestarts -p ActiveState -p SubState > show-after.txt
systemctl stop "$UNIT"
event stopped
rmdir "$PARENT" 2>/dev/null
exit 0
