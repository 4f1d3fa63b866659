"""Exceptions raised by the integrity layer."""

from __future__ import annotations


class IntegrityError(Exception):
    """Base class of every error raised by :mod:`wazuhcluster.integrity`."""


class ItemsConfigError(IntegrityError):
    """The ``files`` section of ``cluster.json`` is malformed."""


class UnsafePathError(IntegrityError):
    """A path received from a peer is unsafe or lies outside every cluster item.

    ``reason`` is a short machine-friendly explanation (e.g. ``"absolute"``).
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"refused path {path!r}: {reason}")
        self.path = path
        self.reason = reason


class MetadataError(IntegrityError):
    """A metadata document (``files_metadata.json``) does not have the expected shape."""


class CompareError(IntegrityError):
    """Worker metadata cannot be compared (e.g. it names an unknown cluster item)."""


class ContainerError(IntegrityError):
    """A container is truncated, malformed, or exceeds one of the reader's limits."""
