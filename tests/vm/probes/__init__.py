"""Small programs the light VM runs (`python -m tests.vm.probes.NAME OUT.json`).

They run as root inside the guest, against a real cgroup v2 tree, and write
what they saw as JSON into the shared /out folder for the host-side test to
check. Never run them on the host: they create cgroups and PSI triggers.
"""
