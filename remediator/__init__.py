"""remediator: remediate cgroup v2 memory pressure instead of killing."""

__version__ = "0.1.0"
