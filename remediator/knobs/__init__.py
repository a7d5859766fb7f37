"""The knobs remediator turns, one module each, and the one registry that names them.

Each module (``reclaim``, ``memory_high``, ``vfs_cache_pressure``, ``drop_caches``) owns its knob's
plan, write, restore, value format and record vocabulary (``remediator.knobs.base.KnobPlugin``). The
ladder, the core's outcome bookkeeping and the executor find a knob here, by its name (a policy rung's
``kind``, a record's REMEDIATOR_ACTION) or by one of its actions. A new knob is a new module, its
policy model and one line in ``_BUILT_IN``.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from remediator.knobs.base import Action, KnobPlugin, OwnedKnob
from remediator.knobs.drop_caches import DropCaches
from remediator.knobs.memory_high import MemoryHigh
from remediator.knobs.reclaim import ReclaimKnob
from remediator.knobs.vfs_cache_pressure import VfsCachePressure

_BUILT_IN: Tuple[KnobPlugin, ...] = (ReclaimKnob(), MemoryHigh(), VfsCachePressure(), DropCaches())

_REGISTRY: Dict[str, KnobPlugin] = {}


def register(plugin: KnobPlugin) -> None:
    """Add a knob; its name must be new."""
    if plugin.knob in _REGISTRY:
        raise ValueError(f"knob {plugin.knob} is already registered")
    _REGISTRY[plugin.knob] = plugin


def unregister(knob: str) -> None:
    """Remove a knob (tests that register one of their own)."""
    del _REGISTRY[knob]


def plugins() -> Tuple[KnobPlugin, ...]:
    return tuple(_REGISTRY.values())


def plugin_of(knob: str) -> Optional[KnobPlugin]:
    """The knob named ``knob`` (a policy rung's kind), if registered."""
    return _REGISTRY.get(knob)


def owned_of(kind: str, name: str) -> Optional[OwnedKnob]:
    """The knob that owns a state file entry (``kind``, ``name``), if registered."""
    for plugin in _REGISTRY.values():
        owned = plugin.owned
        if owned is not None and owned.kind == kind and (owned.per_cgroup or plugin.knob == name):
            return owned
    return None


def plugin_for(action: Action) -> Optional[KnobPlugin]:
    """The knob ``action`` belongs to, if any."""
    for plugin in _REGISTRY.values():
        if plugin.handles(action):
            return plugin
    return None


for _plugin in _BUILT_IN:
    register(_plugin)
