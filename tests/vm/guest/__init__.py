"""Code that runs *inside* the VM: real cgroups, real workloads, the real daemon as a process."""
