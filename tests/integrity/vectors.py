"""Test vectors produced by real Wazuh 4.7.5 code, and helpers to lay them out on disk."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from wazuhcluster.integrity.items import ClusterItems, load_cluster_items, parse_cluster_items

#: Directory holding the integrity vectors (see manifest.json, key "integrity").
VECTORS = Path(__file__).resolve().parent.parent / "data" / "wazuh-4.7.5"
INTEGRITY = VECTORS / "integrity"


def load_json(name: str) -> object:
    """Load one JSON vector of the integrity directory."""
    with open(INTEGRITY / name, encoding="utf-8") as f:
        return json.load(f)


def load_bytes(name: str) -> bytes:
    """Load one binary vector of the integrity directory."""
    return (INTEGRITY / name).read_bytes()


def shipped_items() -> ClusterItems:
    """The items of the ``cluster.json`` shipped in the package."""
    return load_cluster_items()


def reference_items() -> ClusterItems:
    """The items of the real Wazuh 4.7.5 ``cluster.json`` stored with the vectors."""
    with open(VECTORS / "cluster.json", encoding="utf-8") as f:
        return parse_cluster_items(json.load(f)["files"])


def write_tree(home: str, tree: dict[str, tuple[bytes, float]]) -> None:
    """Create ``path -> (content, mtime)`` files under ``home``."""
    for relative, (content, mtime) in tree.items():
        full = os.path.join(home, relative)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(content)
        os.utime(full, (mtime, mtime))


def sample_tree() -> dict[str, tuple[bytes, float]]:
    """The files of ``sample_tree.json`` as ``path -> (content, mtime)``."""
    raw = load_json("sample_tree.json")
    assert isinstance(raw, dict)
    return {
        path: (base64.b64decode(spec["content_b64"]), spec["mtime"]) for path, spec in raw.items()
    }


def make_home(directory: str) -> str:
    """Create ``directory`` and lay out the sample tree in it; return it."""
    os.makedirs(directory)
    write_tree(directory, sample_tree())
    return directory
