#!/bin/sh
# The installed-package test, inside the full VM (Debian 12, systemd as PID 1, no network), as root, from
# /payload (tests/packaging/test_installed_debian12.py copies this folder and the .deb there).
#
# Every check appends "<name> ok" or "<name> FAIL" to checks.txt and goes on, so one run reports every
# failure; observations go to values.txt ("<key> <value>") and command output to files beside them. The
# host-side test asserts on these and on the journal (remediator-journal.json, and the harness's
# journal.json of the whole boot).
set -u
cd /payload || exit 2
: >checks.txt
: >values.txt
exec >run.log 2>&1
set -x

UNIT=remediator.service
VICTIM=/sys/fs/cgroup/remediator-vm-victim
CACHE_FILE=/var/tmp/remediator-vm-cache.bin

# MESSAGE_IDs (remediator/core/records.py).
ID_STARTED=275eacdb5c0945c88ddb91a6b99e7a7b
ID_STOPPING=3e7827fd34e34bfc9748180b44ccb23c
ID_RELOADED=f967dc4d746b4d2b96e508d6c4c04e88
ID_REJECTED=068bc504ce4543c582b3fdcc524ba28a
ID_APPLIED=7c7191e7214b443bb078acbd0a13f832
ID_RESTORED=67fe14691bec4a869cba9e9bed40b846

check() {
    name=$1
    shift
    if "$@"; then
        echo "$name ok" >>checks.txt
    else
        echo "$name FAIL" >>checks.txt
    fi
}

value() {
    echo "$1 $2" >>values.txt
}

# wait_for SECONDS COMMAND...: until the command succeeds, at most SECONDS of wall-clock time (the readers
# of the pressure test load both vCPUs, so counting one-second sleeps would wait far longer).
wait_for() {
    deadline=$(($(date +%s) + $1))
    shift
    while ! "$@"; do
        [ "$(date +%s)" -ge "$deadline" ] && return 1
        sleep 1
    done
    return 0
}

is_active() { [ "$(systemctl is-active "$UNIT")" = active ]; }
is_gone() { ! is_active; }

# Records of one MESSAGE_ID the daemon wrote (optionally only those whose fields match "FIELD=value").
records() {
    if [ -n "${2:-}" ]; then
        journalctl --no-pager -q -o cat _SYSTEMD_UNIT="$UNIT" MESSAGE_ID="$1" "$2" 2>/dev/null | grep -c .
    else
        journalctl --no-pager -q -o cat _SYSTEMD_UNIT="$UNIT" MESSAGE_ID="$1" 2>/dev/null | grep -c .
    fi
}
# records_above MESSAGE_ID COUNT [FIELD=value]: more such records than COUNT.
records_above() { [ "$(records "$1" "${3:-}")" -gt "$2" ]; }

victim_high() { cat "$VICTIM/memory.high"; }

start_victim() {
    # Four readers of a file twice the size of the cgroup's memory.max: its page cache is reclaimed all
    # the time, which the kernel counts as memory stall (measured: a trigger fires within seconds).
    sh -c "echo \$\$ >$VICTIM/cgroup.procs
        for reader in 1 2 3 4; do (while :; do cat $CACHE_FILE >/dev/null; done) & done
        wait" &
}

stop_victim() {
    echo 0 >"$VICTIM/cgroup.freeze"
    echo 1 >"$VICTIM/cgroup.kill"
    wait_for 20 sh -c "[ ! -s $VICTIM/cgroup.procs ]"
}

DEB=$(ls remediator_*~debian12_amd64.deb)
value deb "$DEB"

# --- 1. install: apt resolves the dependencies from what is installed (the VM has no network).
# Not --no-download: apt 2.6 then refuses a local .deb ("Internal Error, Pathname to install is not
# absolute"). Nothing is downloaded anyway: every dependency is already in the image.
apt-get install -y "$PWD/$DEB" >apt-install.log 2>&1
rc=$?
value apt_install_rc "$rc"
if [ "$rc" != 0 ]; then
    # Fallback kept visible in the report: dpkg installs the same package without apt's resolver.
    dpkg -i "$PWD/$DEB" >dpkg-install.log 2>&1
    value dpkg_install_rc $?
fi
check installed_with_apt [ "$rc" = 0 ]
check launcher_runs sh -c 'remediator --version >version.txt'
check cli_check_of_shipped_config sh -c 'remediator check >check.txt 2>&1'
check unit_enabled sh -c "[ \"\$(systemctl is-enabled $UNIT)\" = enabled ]"
check unit_active wait_for 60 is_active
systemctl status --no-pager "$UNIT" >status-after-install.txt 2>&1
systemctl show "$UNIT" >show-after-install.txt
value main_pid "$(systemctl show -p MainPID --value "$UNIT")"
value status_text "$(systemctl show -p StatusText --value "$UNIT" | tr ' ' '_')"
value n_restarts "$(systemctl show -p NRestarts --value "$UNIT")"
check started_record wait_for 30 records_above "$ID_STARTED" 0
check catalog_indexed sh -c 'journalctl --list-catalog 2>/dev/null | grep -q 275eacdb5c0945c88ddb91a6b99e7a7b'
check bytecode_compiled sh -c 'ls /usr/lib/remediator/remediator/__pycache__/*.pyc >/dev/null'
systemd-analyze security "$UNIT" >security-online.txt 2>&1
# cgroup v2 bounds the service's protection by its parent's: both must carry it.
cgroup=/sys/fs/cgroup/$(systemctl show -p ControlGroup --value "$UNIT")
value daemon_cgroup "$cgroup"
check memory_protected sh -c "[ \$(cat $cgroup/memory.min) -gt 0 ] && [ \$(cat $cgroup/../memory.min) -gt 0 ] \
    && [ \$(cat $cgroup/memory.low) -gt 0 ] && [ \$(cat $cgroup/../memory.low) -gt 0 ]"
value memory_min_daemon "$(cat "$cgroup/memory.min")"
value memory_min_parent "$(cat "$cgroup/../memory.min")"

# --- 2. the sandbox allows exactly the daemon's writes (probed inside its mount namespace).
pid=$(systemctl show -p MainPID --value "$UNIT")
check sandbox_vm_sysctl_writable nsenter -t "$pid" -m sh -c \
    'cat /proc/sys/vm/vfs_cache_pressure >/proc/sys/vm/vfs_cache_pressure'
check sandbox_cgroup_writable nsenter -t "$pid" -m sh -c \
    'cat /sys/fs/cgroup/system.slice/memory.high >/sys/fs/cgroup/system.slice/memory.high'
check sandbox_kernel_sysctl_read_only sh -c "! nsenter -t $pid -m sh -c \
    'cat /proc/sys/kernel/hostname >/proc/sys/kernel/hostname' 2>/dev/null"
check sandbox_etc_read_only sh -c "! nsenter -t $pid -m touch /etc/remediator/probe 2>/dev/null"
check sandbox_state_dir_private sh -c "[ \"\$(stat -c %a /run/remediator)\" = 700 ]"

# --- 3. a reload loads a new policy.
mkdir -p "$VICTIM"
echo 64M >"$VICTIM/memory.max"
cp vm-victim.yaml /etc/remediator/policies.d/vm-victim.yaml
before=$(records "$ID_RELOADED")
check reload_command systemctl reload "$UNIT"
check reload_record wait_for 30 records_above "$ID_RELOADED" "$before"
check active_after_reload is_active
check same_pid_after_reload sh -c "[ \"\$(systemctl show -p MainPID --value $UNIT)\" = $pid ]"

# --- 4. an invalid policy and a reload: `remediator reload` (ExecReload=) validates first, prints every
# error on its stderr (the unit's journal) and exits 1 without signalling, so `systemctl reload` fails
# and the daemon keeps the policies it runs (README, Commands: reload).
cp broken.yaml /etc/remediator/policies.d/broken.yaml
rejected_before=$(records "$ID_REJECTED")
reloaded_before=$(records "$ID_RELOADED")
systemctl reload "$UNIT" 2>reload-broken.stderr
rc=$?
value reload_with_broken_policy_rc "$rc"
check reload_with_broken_policy_failed [ "$rc" != 0 ]
# A signalled daemon would have written its reload or rejection records within a second or two.
sleep 5
check rejected_set_not_reloaded [ "$(records "$ID_RELOADED")" = "$reloaded_before" ]
check daemon_not_signalled [ "$(records "$ID_REJECTED")" = "$rejected_before" ]
check active_after_rejected_reload is_active
check same_pid_after_rejected_reload sh -c "[ \"\$(systemctl show -p MainPID --value $UNIT)\" = $pid ]"
rm -f /etc/remediator/policies.d/broken.yaml

# --- 5. pressure in dry-run: a record says what would be done (the policy loaded before the rejected
# reload is the one acting, so the old set kept running).
head -c 160M /dev/zero >"$CACHE_FILE"
sync
echo 3 >/proc/sys/vm/drop_caches
start_victim
check dry_run_record wait_for 120 records_above "$ID_APPLIED" 0 REMEDIATOR_DRY_RUN=1
check dry_run_wrote_nothing sh -c "[ \"\$(cat $VICTIM/memory.high)\" = max ]"
stop_victim

# --- 6. enforcing: switch as the README says, then pressure until memory.high is clamped.
sed -i 's/^dry_run: true$/dry_run: false/' /etc/remediator/remediator.yaml
check switched_to_enforcing grep -q '^dry_run: false$' /etc/remediator/remediator.yaml
systemctl restart "$UNIT"
check active_enforcing wait_for 60 is_active
sync
echo 3 >/proc/sys/vm/drop_caches
start_victim
# Freezes the victim the moment memory.high is clamped, so the clamp stays until the removal below
# (why: freeze_on_clamp.py).
check enforcing_clamped_memory_high python3 freeze_on_clamp.py "$VICTIM" 150
value victim_memory_high_clamped "$(victim_high)"
check applied_record records_above "$ID_APPLIED" 0 REMEDIATOR_DRY_RUN=0

# The queries README.md ("Install on a node") shows: `-u remediator` together with a REMEDIATOR_* match.
journalctl --no-pager -u remediator REMEDIATOR_ACTION=memory_high -o json >readme-query-memory-high.json
journalctl --no-pager -u remediator REMEDIATOR_RESULT=would -o json >readme-query-would.json

# The journal as an operator reads it, before removal takes the catalog away.
journalctl --no-pager -u "$UNIT" -o json >remediator-journal.json
journalctl --no-pager -u "$UNIT" -x >remediator-journal-x.txt 2>&1

# --- 7. remove (not purge): the service stops, the clamp is restored, the configuration stays.
echo "# edited by the VM test" >>/etc/remediator/policies.d/services-cache.yaml
restored_before=$(records "$ID_RESTORED")
value victim_memory_high_before_remove "$(victim_high)"
apt-get remove -y remediator >apt-remove.log 2>&1
value apt_remove_rc $?
value victim_memory_high_after_remove "$(victim_high)"
check remove_restored_memory_high sh -c "[ \"\$(cat $VICTIM/memory.high)\" = max ]"
check remove_stopped_service is_gone
check stopping_record records_above "$ID_STOPPING" 0
check restore_record records_above "$ID_RESTORED" "$restored_before"
check remove_left_no_files sh -c '[ ! -e /usr/lib/remediator ] && [ ! -e /usr/bin/remediator ]'
check remove_kept_configuration grep -q '^# edited by the VM test$' /etc/remediator/policies.d/services-cache.yaml
stop_victim

# --- 8. reinstall: the edited policy file is kept, the service comes back.
apt-get install -y "$PWD/$DEB" >apt-reinstall.log 2>&1
value apt_reinstall_rc $?
check reinstall_kept_edited_policy grep -q '^# edited by the VM test$' \
    /etc/remediator/policies.d/services-cache.yaml
check reinstall_kept_settings grep -q '^dry_run: false$' /etc/remediator/remediator.yaml
check reinstall_active wait_for 60 is_active

# --- 10. metrics through Debian's node_exporter (issue 14): enforcing on a pressured systemd service and
# on a container of a kubepods-shaped tree (systemd driver, containerd), scraped on 127.0.0.1:9100. The
# image has prometheus-node-exporter, not started at boot (tests/vm/harness.py).
TEXTFILE=/var/lib/prometheus/node-exporter/remediator.prom
PRESSURED=vm-pressured
POD_UID=0b8c6e2a-1f3d-4c5e-9a7b-1234567890ab
POD_SLICE=kubepods-burstable-pod$(echo "$POD_UID" | tr - _).slice
CONTAINER_ID=3f9a6c0e5b7d4e21a8c9f0b1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1
KUBE_CGROUP=kubepods.slice/kubepods-burstable.slice/$POD_SLICE/cri-containerd-$CONTAINER_ID.scope
CACHE_FILE_2=/var/tmp/remediator-vm-cache-2.bin
value kube_cgroup "$KUBE_CGROUP"
# What the kubelet leaves in /var/log: the pod's directory and the container's link (the names in records).
mkdir -p "/var/log/pods/shop_web-0_$POD_UID/app" /var/log/containers
: >"/var/log/pods/shop_web-0_$POD_UID/app/0.log"
ln -sf "/var/log/pods/shop_web-0_$POD_UID/app/0.log" "/var/log/containers/web-0_shop_app-$CONTAINER_ID.log"
check node_exporter_started sh -c 'systemctl start prometheus-node-exporter \
    && [ "$(systemctl is-active prometheus-node-exporter)" = active ]'
# The file every 2 s instead of 15 (a restart: counters start at 0 with this process's journal records).
echo "metrics_interval_sec: 2" >>/etc/remediator/remediator.yaml
systemctl restart "$UNIT"
check metrics_daemon_active wait_for 60 is_active
value metrics_pid "$(systemctl show -p MainPID --value "$UNIT")"
check scrape_before python3 scrape.py scrape-before.txt 60 '^remediator_build_info'
# Two files, each first read by its own cgroup (page cache is charged to the cgroup that touched it first).
head -c 160M /dev/zero >"$CACHE_FILE_2"
sync
echo 3 >/proc/sys/vm/drop_caches
readers="for reader in 1 2 3 4; do (while :; do cat \$0 >/dev/null; done) & done; wait"
systemd-run --unit="$PRESSURED" -p MemoryMax=64M sh -c "$readers" "$CACHE_FILE" >systemd-run-service.log 2>&1
systemd-run --scope --unit="cri-containerd-$CONTAINER_ID" --slice="$POD_SLICE" -p MemoryMax=64M \
    sh -c "$readers" "$CACHE_FILE_2" >systemd-run-scope.log 2>&1 &
check service_reclaimed wait_for 150 records_above "$ID_APPLIED" 0 "REMEDIATOR_CGROUP=system.slice/$PRESSURED.service"
check container_reclaimed wait_for 150 records_above "$ID_APPLIED" 0 "REMEDIATOR_CGROUP=$KUBE_CGROUP"
# While it runs: node_exporter serves the daemon's counters of what it did.
# The pressure gauge holds a cgroup only while it is under action (a ladder active or a value owned): the
# page must show both cgroups at once, the container by its pod's names.
check scrape_during python3 scrape.py scrape-during.txt 90 \
    '^remediator_actions_total\{[^}]*result="applied"[^}]*\} [1-9]' \
    "^remediator_cgroup_full_pressure_avg10\\{(?=[^}]*cgroup=\"$KUBE_CGROUP\")(?=[^}]*pod=\"web-0\")" \
    "^remediator_cgroup_full_pressure_avg10\\{(?=[^}]*cgroup=\"system.slice/$PRESSURED.service\")"
systemctl stop "$PRESSURED.service" "cri-containerd-$CONTAINER_ID.scope"
value status_text_enforcing "$(systemctl show -p StatusText --value "$UNIT")"
# The stop writes the file one last time (and the summaries of coalesced records to the journal).
systemctl stop "$UNIT"
check scrape_after python3 scrape.py scrape-after.txt 30 '^remediator_actions_total'
cp "$TEXTFILE" remediator-after.prom
value textfile_mode "$(stat -c %a "$TEXTFILE")"
systemctl stop prometheus-node-exporter

# --- 11. a start with a broken policy (issue 12 item 9). (a) The enforcing start above kept its valid set
# (in data_dir, /var/lib/remediator in the packaged settings); with one policy file broken, the next
# start runs that set, DEGRADED, even after a reboot has emptied /run (simulated: /run/remediator removed).
cp broken.yaml /etc/remediator/policies.d/broken.yaml
check degraded_kept_set_exists [ -d /var/lib/remediator/last-valid-policies ]
rm -rf /run/remediator
systemctl start "$UNIT" 2>start-degraded.stderr
value start_degraded_rc $?
check degraded_active wait_for 60 is_active
value status_text_degraded "$(systemctl show -p StatusText --value "$UNIT")"
systemctl status --no-pager "$UNIT" >status-degraded.txt 2>&1
value degraded_pid "$(systemctl show -p MainPID --value "$UNIT")"
systemctl stop "$UNIT"
# (b) No kept set (a node where no valid set ever ran): the start is refused, with the errors.
rm -rf /var/lib/remediator/last-valid-policies
systemctl start "$UNIT" 2>start-refused.stderr
rc=$?
value start_refused_rc "$rc"
check refused_start_failed [ "$rc" != 0 ]
check refused_not_active sh -c "! systemctl is-active --quiet $UNIT"
systemctl stop "$UNIT"
systemctl reset-failed "$UNIT"
rm -f /etc/remediator/policies.d/broken.yaml

# --- 9. purge: everything goes, /etc/remediator included.
apt-get purge -y remediator >apt-purge.log 2>&1
value apt_purge_rc $?
check purge_removed_configuration sh -c '[ ! -e /etc/remediator ]'
check purge_stopped_service is_gone
rmdir "$VICTIM"

journalctl --no-pager -u "$UNIT" -o json >remediator-journal-all.json
exit 0
