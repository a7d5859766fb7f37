"""What a trace's header says about where it was recorded: the node, its capabilities, the policies.

Shared by ``remediator record`` and the daemon's flight recorder, which write the
same header (only ``source`` and ``interval_sec`` differ).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import List, Tuple

from remediator.errors import KernelError
from remediator.kernel.capabilities import Capabilities
from remediator.kernel.file_io import read_text
from remediator.kernel.roots import KernelRoots
from remediator.policy.loader import MAX_POLICY_FILE_BYTES, list_policy_files
from remediator.trace.format import NodeWatchMode, PolicyDigest, TraceCapabilities

HOSTNAME_FILE = "sys/kernel/hostname"


def policy_digests(directory: Path) -> Tuple[PolicyDigest, ...]:
    """sha256 of each policy file's bytes, so a replay can tell whether it runs the recorded policies."""
    files, _ = list_policy_files(directory)
    digests: List[PolicyDigest] = []
    for path in files:
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_POLICY_FILE_BYTES + 1)
        except OSError:
            continue  # `check` says why; the trace just does not vouch for that file
        digests.append(PolicyDigest(path.name, hashlib.sha256(data).hexdigest()))
    return tuple(digests)


def trace_capabilities(caps: Capabilities) -> TraceCapabilities:
    return TraceCapabilities(
        memory_reclaim=caps.memory_reclaim,
        watch_mode=NodeWatchMode(caps.watch_mode),
        triggers_accepted=None if caps.trigger is None else caps.trigger.accepted,
        short_window_triggers=None
        if caps.short_window_trigger is None
        else caps.short_window_trigger.accepted,
        summary=tuple(caps.summary_lines()),
    )


def node_name(roots: KernelRoots) -> str:
    # The recorded node's name: from the proc root (a copied tree's own), else this host's.
    try:
        name = read_text(roots.proc_file(HOSTNAME_FILE)).strip()
    except KernelError:
        name = ""
    return name or os.uname().nodename


__all__ = ["HOSTNAME_FILE", "node_name", "policy_digests", "trace_capabilities"]
