"""What a cgroup's memory is made of, and what that means: pure functions of readings."""
