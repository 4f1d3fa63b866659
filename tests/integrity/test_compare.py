"""Tests for wazuhcluster.integrity.compare."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.integrity.vectors import load_json, shipped_items
from wazuhcluster.integrity.compare import Comparison, compare_metadata
from wazuhcluster.integrity.errors import CompareError, MetadataError
from wazuhcluster.integrity.items import parse_cluster_items
from wazuhcluster.integrity.metadata import FileEntry, metadata_from_json


def entry(key: str, digest: str) -> FileEntry:
    """A metadata entry with a fixed mtime."""
    return FileEntry(mod_time=1.0, cluster_item_key=key, merged=False, hash=digest)


class CompareTests(SynchronousTestCase):
    """Classification into missing, extra and shared."""

    def test_vector(self) -> None:
        """files_status vs worker_files_status gives Wazuh's compare_files_result."""
        result = compare_metadata(
            metadata_from_json(load_json("files_status.json")),
            metadata_from_json(load_json("worker_files_status.json")),
            shipped_items(),
        )
        self.assertEqual(result.to_json(), load_json("compare_files_result.json"))
        self.assertEqual(list(result.to_json()), ["missing", "extra", "shared"])

    def test_in_sync_is_empty(self) -> None:
        """Identical hashes with different mtimes are ignored."""
        master = {"etc/client.keys": entry("etc/", "aa")}
        worker = {"etc/client.keys": FileEntry(9.0, "etc/", False, "aa")}
        self.assertTrue(compare_metadata(master, worker, shipped_items()).is_empty)

    def test_extra_valid_items_keep_worker_only_files(self) -> None:
        """Worker-only files of an extra_valid item are not classified extra."""
        items = parse_cluster_items(
            {
                "keep/": {"permissions": "0o660", "files": ["all"], "extra_valid": True},
                "drop/": {"permissions": "0o660", "files": ["all"]},
            }
        )
        worker = {"keep/a": entry("keep/", "1"), "drop/b": entry("drop/", "2")}
        result = compare_metadata({}, worker, items)
        self.assertEqual(list(result.extra), ["drop/b"])

    def test_unknown_worker_item_fails_the_comparison(self) -> None:
        """A worker-only or differing entry naming an unknown item raises CompareError."""
        items = shipped_items()
        self.assertRaises(CompareError, compare_metadata, {}, {"x/a": entry("x/", "1")}, items)
        master = {"etc/client.keys": entry("etc/", "1")}
        worker = {"etc/client.keys": entry("nope/", "2")}
        self.assertRaises(CompareError, compare_metadata, master, worker, items)

    def test_without_moves_vanished_shared_to_extra(self) -> None:
        """Dropping a vanished shared file turns it into an extra (Wazuh behaviour)."""
        comparison = Comparison(missing={"a": entry("etc/", "1")}, shared={"b": entry("etc/", "2")})
        self.assertEqual(comparison.without("a").missing, {})
        moved = comparison.without("b", vanished=True)
        self.assertEqual((moved.shared, list(moved.extra)), ({}, ["b"]))
        self.assertEqual(comparison.without("b").extra, {})

    def test_from_json_round_trip_and_errors(self) -> None:
        """Push metadata parses back to the same comparison; bad shapes raise."""
        document = load_json("compare_files_result.json")
        self.assertEqual(Comparison.from_json(document).to_json(), document)
        self.assertEqual(Comparison.from_json({}), Comparison())
        self.assertRaises(MetadataError, Comparison.from_json, [])
        self.assertRaises(MetadataError, Comparison.from_json, {"bogus": {}})
