"""The shapes of Kubernetes names and ids, as the API server validates them (no API is called).

Shared by the cgroup-path parser (``remediator.identity``), the kubelet log
directories (``remediator.pod_logs``) and the policy language
(``target.kubernetes`` namespaces).
"""

from __future__ import annotations

import re
from typing import Optional

_UID_DASHED = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
_UID_UNDERSCORED = re.compile(r"[0-9a-f]{8}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{4}_[0-9a-f]{12}\Z")
_UID_STATIC = re.compile(r"[0-9a-f]{32}\Z")
CONTAINER_ID = re.compile(r"[0-9a-f]{64}\Z")  # a container id, without its runtime prefix

# Kubernetes names (apimachinery validation): namespaces and container names are DNS labels (RFC 1123),
# pod names DNS subdomains.
_DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?\Z")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*\Z")
_DNS_SUBDOMAIN_MAX = 253


def is_dns_label(name: str) -> bool:
    return _DNS_LABEL.match(name) is not None


def is_dns_subdomain(name: str) -> bool:
    return len(name) <= _DNS_SUBDOMAIN_MAX and _DNS_SUBDOMAIN.match(name) is not None


def canonical_pod_uid(text: str, separator: str) -> Optional[str]:
    """The pod UID (with ``-``) from its cgroup spelling, or None if it is not UID-shaped.

    ``separator`` is how the driver spells the UID's dashes: ``_`` (systemd) or ``-`` (cgroupfs).
    """
    if _UID_STATIC.match(text):
        return text
    shape = _UID_UNDERSCORED if separator == "_" else _UID_DASHED
    if shape.match(text) is None:
        return None
    return text.replace("_", "-")
