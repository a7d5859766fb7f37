"""Guest-side scenarios of the real-kernel daemon tests (``python -m tests.vm.scenarios.NAME``).

Each module runs inside the light VM as root, sets up real cgroups and
workloads, runs the daemon as a process (``tests.vm.guest.lib.Daemon``), and
writes what it measured to ``$VM_OUT/NAME.json`` for the host-side test in
``tests/vm/test_vm_daemon.py``. Never run them on the host: they write
``/sys/fs/cgroup`` and ``/proc/sys/vm``.
"""
