#!/bin/sh
# An operator's reload with a broken policy, and --log-target journal without journald (full VM: systemd
# as PID 1; issue 12 items 10 and 13).
#
# The payload folder holds site/ (remediator and its dependencies from the host's venv, as for the
# journald faults). Left for the host: reload-broken.rc, reload-fixed.rc (the exit status of
# `systemctl reload`), hups.txt (the daemon's reload records seen so far, counted at each step),
# show.txt, and nojournal.stderr / nojournal.rc (a one-shot run with journald gone).
set -u
cd /payload
UNIT=remediator-optest
ETC=/etc/remediator-optest
PY="/usr/bin/python3 -m remediator --config $ETC/remediator.yaml"

mkdir -p "$ETC/policies.d"
cat > "$ETC/policies.d/optest.yaml" <<'EOF'
target: {kind: cgroups, include: ["optest.slice/*"]}
trigger: {pressure: some, stall_ms: 200, window_ms: 2000}
actions: [{kind: reclaim}]
EOF
cat > "$ETC/remediator.yaml" <<EOF
policies_dir: $ETC/policies.d
state_file: /run/$UNIT/state.json
log_target: journal
EOF
chmod 0755 "$ETC" "$ETC/policies.d"
chmod 0644 "$ETC/remediator.yaml" "$ETC/policies.d/optest.yaml"

# ExecReload= as the packaged unit has it; ${MAINPID} is expanded by systemd.
systemd-run --unit="$UNIT" -p Type=notify -p NotifyAccess=main -p TimeoutStartSec=600 \
    -p RuntimeDirectory="$UNIT" -p RuntimeDirectoryMode=0700 --setenv=PYTHONPATH=/payload/site \
    -p "ExecReload=$PY reload --pid \${MAINPID}" \
    $PY run
reloads() { journalctl -b -u "$UNIT" -o cat MESSAGE_ID=f967dc4d746b4d2b96e508d6c4c04e88 | wc -l; }

echo "start $(reloads)" > hups.txt
printf 'target: {kind: cgroups, include: []}\nnonsense: 1\n' > "$ETC/policies.d/broken.yaml"
chmod 0644 "$ETC/policies.d/broken.yaml"
systemctl reload "$UNIT"
echo $? > reload-broken.rc
sleep 3
echo "after-broken $(reloads)" >> hups.txt
rm "$ETC/policies.d/broken.yaml"
systemctl reload "$UNIT"
echo $? > reload-fixed.rc
sleep 5
echo "after-fixed $(reloads)" >> hups.txt
systemctl show "$UNIT" -p ActiveState -p NRestarts > show.txt
systemctl stop "$UNIT"

# journald gone: its sockets stopped and the native socket's file removed (stopping a socket unit
# leaves the file: RemoveOnStop= is off), as in a container or a rescue shell.
systemctl stop systemd-journald.service systemd-journald.socket systemd-journald-dev-log.socket \
    systemd-journald-audit.socket 2>/dev/null
rm -f /run/systemd/journal/socket
PYTHONPATH=/payload/site $PY run --once --dry-run --log-target journal 2> nojournal.stderr
echo $? > nojournal.rc
systemctl start systemd-journald.socket systemd-journald.service
exit 0
