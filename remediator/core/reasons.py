"""Why the core declined: its stable reason keys, and the small fixed set of labels they map to.

Every ACTION_DECLINED record the core makes carries two extra fields:

- ``REASON``: one of ``DeclineReason`` (``floor``, ``not_reclaimable``,
  ``cooldown``, ``rate_limit``, ``other_writer``, ``no_kernel_support``, ...):
  a fixed set, the same words as the ``reason`` label of
  ``remediator_declines_total``, so ``journalctl REMEDIATOR_REASON=floor``
  finds the records behind an alert;
- ``REASON_KEY``: the core's own stable key (``rung1:no_room_above_floor``,
  ``condition:min_reclaimable_fraction``, ``ladder_exhausted``), which says
  exactly which check it was. A key the map below does not know is ``other``,
  so the label set stays fixed when the core gains a reason.

Pure: no I/O, no dependency outside the standard library.
"""

from __future__ import annotations

import enum
import re
from typing import Dict, Mapping

REASON_FIELD = "REASON"
REASON_KEY_FIELD = "REASON_KEY"


class DeclineReason(str, enum.Enum):
    """Why a rung or a policy did not act, in the few words an alert can be written on."""

    FLOOR = "floor"  # unreclaimable memory leaves no room for memory.high below the limit
    NOT_RECLAIMABLE = "not_reclaimable"  # too little clean page cache to reclaim
    COOLDOWN = "cooldown"
    RATE_LIMIT = "rate_limit"  # max_per_hour, or the node-wide limit
    OTHER_WRITER = "other_writer"  # someone else (or another policy) owns the value
    NO_KERNEL_SUPPORT = "no_kernel_support"  # e.g. no memory.reclaim before 5.19
    CONDITIONS = "conditions"  # a policy condition does not hold
    BACKED_OFF = "backed_off"  # memory.high was backed off: not again before the calm
    NOT_ALLOWED = "not_allowed"  # a node-wide rung in a policy without allow_node_wide
    LADDER_EXHAUSTED = "ladder_exhausted"  # pressure persists and no rung is left
    OTHER = "other"


# The decision core's stable reason keys (core/decide.py, core/ladder.py; a rung's come as
# "rung<N>:<key>", a condition's as "condition:<name>") -> the label. Unknown keys are "other".
REASON_KEYS: Mapping[str, DeclineReason] = {
    "no_room_above_floor": DeclineReason.FLOOR,
    "too_little_cache": DeclineReason.NOT_RECLAIMABLE,
    "cooldown": DeclineReason.COOLDOWN,
    "max_per_hour": DeclineReason.RATE_LIMIT,
    "clamp_cap": DeclineReason.RATE_LIMIT,  # max_clamped_cgroups
    "node_rate_limit": DeclineReason.RATE_LIMIT,
    "other_writer": DeclineReason.OTHER_WRITER,
    "vfs_owned_elsewhere": DeclineReason.OTHER_WRITER,
    "no_memory_reclaim": DeclineReason.NO_KERNEL_SUPPORT,
    "backed_off": DeclineReason.BACKED_OFF,
    "node_wide_not_allowed": DeclineReason.NOT_ALLOWED,
    "ladder_exhausted": DeclineReason.LADDER_EXHAUSTED,
}
_LABELS: Dict[str, DeclineReason] = {reason.value: reason for reason in DeclineReason}
_RUNG_PREFIX = re.compile(r"rung[0-9]+:")
_CONDITION_PREFIX = "condition:"


def decline_reason(key: str) -> DeclineReason:
    """The label for a reason key (``rung1:no_room_above_floor`` -> ``floor``); a label is itself."""
    key = key.strip()
    if key.startswith(_CONDITION_PREFIX):
        return DeclineReason.CONDITIONS
    match = _RUNG_PREFIX.match(key)
    if match is not None:
        key = key[match.end() :]
    elif key in _LABELS:
        return _LABELS[key]
    return REASON_KEYS.get(key, DeclineReason.OTHER)


def reason_fields(key: str) -> Dict[str, str]:
    """The extra fields of a decline with reason key ``key``: ``REASON`` (the label) and ``REASON_KEY``."""
    return {REASON_FIELD: decline_reason(key).value, REASON_KEY_FIELD: key}


__all__ = [
    "REASON_FIELD",
    "REASON_KEYS",
    "REASON_KEY_FIELD",
    "DeclineReason",
    "decline_reason",
    "reason_fields",
]
