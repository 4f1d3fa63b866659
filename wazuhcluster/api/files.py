"""Atomic replacement of the API's own small files (users, keys, certificates)."""

from __future__ import annotations

from wazuhcluster.atomicfile import write_atomic

__all__ = ["write_atomic"]
