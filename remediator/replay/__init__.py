"""Replaying a trace through the daemon's own loop on a simulated clock (``remediator replay``).

``tree`` writes the recorded readings as kernel files into a private
temporary tree, ``triggers`` plays the kernel's PSI triggers from the
recorded stall totals, ``engine`` drives the real ``Service`` over the
trace, and ``summary`` condenses its records per cgroup.
"""
