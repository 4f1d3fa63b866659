"""Tests for wazuhcluster.integrity.metadata."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil

from twisted.trial.unittest import SynchronousTestCase

from tests.integrity.vectors import load_json, make_home, shipped_items, write_tree
from wazuhcluster.integrity.errors import MetadataError
from wazuhcluster.integrity.metadata import (
    FileEntry,
    file_digest,
    metadata_from_json,
    metadata_to_json,
    rescan_paths,
    scan_items,
)


class VectorTests(SynchronousTestCase):
    """Our scan of sample_tree.json equals Wazuh's files_status.json."""

    def test_scan_equals_files_status(self) -> None:
        """Same paths, same fields, same values (hash, mod_time, item key, merged)."""
        home = make_home(self.mktemp())
        result = scan_items(home, shipped_items())
        self.assertEqual(metadata_to_json(result.files), load_json("files_status.json"))
        self.assertEqual(result.hashed, len(result.files))

    def test_field_order_is_wazuhs(self) -> None:
        """Entries serialise with mod_time, cluster_item_key, merged, hash in that order."""
        home = make_home(self.mktemp())
        entry = scan_items(home, shipped_items()).files["etc/client.keys"]
        self.assertEqual(list(entry.to_json()), ["mod_time", "cluster_item_key", "merged", "hash"])

    def test_json_round_trip(self) -> None:
        """Parsing the vector and serialising it again gives the same document."""
        document = load_json("worker_files_status.json")
        self.assertEqual(metadata_to_json(metadata_from_json(document)), document)


class DigestReuseTests(SynchronousTestCase):
    """A warm scan reuses digests whose size and mtime did not change."""

    def setUp(self) -> None:
        """Lay out the sample tree and scan it once."""
        self.home = make_home(self.mktemp())
        self.items = shipped_items()
        self.first = scan_items(self.home, self.items)

    def test_warm_scan_hashes_nothing(self) -> None:
        """With the previous cache, an unchanged tree is not read at all."""
        second = scan_items(self.home, self.items, self.first.cache)
        self.assertEqual(second.hashed, 0)
        self.assertEqual(second.files, self.first.files)

    def test_warm_scan_reuses_unchanged_entries(self) -> None:
        """Unchanged files keep their entry and cache objects (nothing is rebuilt)."""
        second = scan_items(self.home, self.items, self.first.cache)
        for path, entry in second.files.items():
            self.assertIs(entry, self.first.files[path])
            self.assertIs(second.cache[path], self.first.cache[path])

    def test_same_size_and_mtime_keeps_stale_digest(self) -> None:
        """Content changed with size and mtime kept: the cached digest is reused (as Wazuh)."""
        path = os.path.join(self.home, "etc/lists/audit-keys")
        st = os.stat(path)
        with open(path, "r+b") as f:
            f.write(b"X")
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        second = scan_items(self.home, self.items, self.first.cache)
        self.assertEqual(second.hashed, 0)
        self.assertEqual(
            second.files["etc/lists/audit-keys"].hash, self.first.files["etc/lists/audit-keys"].hash
        )
        self.assertNotEqual(second.files["etc/lists/audit-keys"].hash, file_digest(path))

    def test_changed_mtime_is_rehashed(self) -> None:
        """A file whose mtime changed is hashed again, and only that one."""
        path = os.path.join(self.home, "etc/lists/audit-keys")
        with open(path, "ab") as f:
            f.write(b"new:line\n")
        second = scan_items(self.home, self.items, self.first.cache)
        self.assertEqual(second.hashed, 1)
        with open(path, "rb") as f:
            expected = hashlib.blake2b(f.read()).hexdigest()
        self.assertEqual(second.files["etc/lists/audit-keys"].hash, expected)

    def test_deleted_files_leave_the_cache(self) -> None:
        """A removed file disappears from both the metadata and the cache."""
        os.unlink(os.path.join(self.home, "etc/client.keys"))
        second = scan_items(self.home, self.items, self.first.cache)
        self.assertNotIn("etc/client.keys", second.files)
        self.assertNotIn("etc/client.keys", second.cache)


class SkipTests(SynchronousTestCase):
    """Symlinks, special files and odd names are skipped, never followed."""

    def setUp(self) -> None:
        """A home with one real file and an outside directory holding a secret."""
        base = self.mktemp()
        self.home = os.path.join(base, "home")
        self.outside = os.path.join(base, "outside")
        write_tree(self.home, {"etc/shared/default/agent.conf": (b"<x/>", 1.0)})
        write_tree(self.outside, {"secret.txt": (b"secret", 1.0)})
        self.items = shipped_items()

    def test_symlinked_file_and_directory_are_skipped(self) -> None:
        """A link to a file and a link to a directory are reported, not scanned."""
        os.symlink(
            os.path.join(self.outside, "secret.txt"),
            os.path.join(self.home, "etc/shared/default/link.conf"),
        )
        os.symlink(self.outside, os.path.join(self.home, "etc/shared/linkdir"))
        result = scan_items(self.home, self.items)
        self.assertEqual(list(result.files), ["etc/shared/default/agent.conf"])
        self.assertEqual(
            {(s.path, s.reason) for s in result.skipped},
            {("etc/shared/default/link.conf", "symlink"), ("etc/shared/linkdir", "symlink")},
        )

    def test_symlinked_item_directory_is_skipped(self) -> None:
        """An item whose directory is a link is skipped as a whole."""
        os.symlink(self.outside, os.path.join(self.home, "etc/rules"))
        result = scan_items(self.home, self.items)
        self.assertNotIn("etc/rules/secret.txt", result.files)
        self.assertIn("item directory is a symlink", {s.reason for s in result.skipped})

    def test_fifo_and_unsafe_names_are_skipped(self) -> None:
        """A FIFO is not opened; a name our workers would refuse is not offered."""
        os.mkfifo(os.path.join(self.home, "etc/shared/default/pipe"))
        write_tree(self.home, {"etc/shared/default/a\\b": (b"x", 1.0)})
        result = scan_items(self.home, self.items)
        self.assertEqual(list(result.files), ["etc/shared/default/agent.conf"])
        self.assertEqual(
            {s.reason for s in result.skipped},
            {"not a regular file", "unsafe name: backslash"},
        )

    def test_missing_item_directories_are_empty(self) -> None:
        """An absent item directory contributes nothing and is not an error."""
        result = scan_items(self.home, self.items)
        self.assertEqual(result.skipped, ())

    def test_merged_names_carry_the_legacy_fields(self) -> None:
        """A name containing ``.merged`` is flagged like Wazuh does."""
        write_tree(self.home, {"etc/shared/x.merged": (b"", 5.0)})
        entry = scan_items(self.home, self.items).files["etc/shared/x.merged"]
        self.assertEqual(
            list(entry.to_json()),
            ["mod_time", "cluster_item_key", "merged", "merge_type", "merge_name", "hash"],
        )
        self.assertEqual(entry.merge_type, "TYPE")
        self.assertEqual(entry.merge_name, os.path.join(self.home, "etc/shared/x.merged"))


class ParseTests(SynchronousTestCase):
    """Parsing peer metadata."""

    def test_malformed_entries_raise(self) -> None:
        """Wrong shapes raise MetadataError."""
        good: dict[str, object] = {
            "mod_time": 1.0,
            "cluster_item_key": "etc/",
            "merged": False,
            "hash": "ab",
        }
        bad: object
        for bad in (
            [],
            {"a": []},
            {"a": {**good, "mod_time": "x"}},
            {"a": {**good, "hash": 3}},
            {"a": {**good, "merged": "no"}},
            {"a": {**good, "cluster_item_key": None}},
        ):
            self.assertRaises(MetadataError, metadata_from_json, bad)

    def test_integer_mod_time_is_accepted(self) -> None:
        """An integral mod_time is accepted as a float."""
        entry = FileEntry.from_json(
            {"mod_time": 5, "cluster_item_key": "etc/", "merged": False, "hash": "ab"}
        )
        self.assertEqual(entry.mod_time, 5.0)


class RescanPathsTests(SynchronousTestCase):
    """Rescanning the files an event named gives what a full scan gives."""

    def setUp(self) -> None:
        """Lay out the sample tree and scan it once."""
        self.home = make_home(self.mktemp())
        self.items = shipped_items()
        self.first = scan_items(self.home, self.items)

    def test_named_changes_equal_a_full_scan(self) -> None:
        """Modified, created, deleted, excluded and uncovered files, 50 random rounds."""
        rng = random.Random(15)
        result = self.first
        candidates = [*self.first.files, "etc/rules/new.xml", "etc/shared/default/x.conf",
                      "etc/lists/new-list", "etc/rules/a.swp", "etc/other/file.txt",
                      "etc/shared/default/merged.mg"]
        for _ in range(50):
            named = rng.sample(candidates, 3)
            for relative in named:
                path = os.path.join(self.home, relative)
                if rng.random() < 0.3:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                else:
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    with open(path, "wb") as f:
                        f.write(os.urandom(rng.randrange(1, 64)))
            rescanned = rescan_paths(self.home, self.items, result,
                                     [os.path.join(self.home, r).encode() for r in named])
            assert rescanned is not None
            full = scan_items(self.home, self.items)
            self.assertEqual(rescanned.files, full.files)
            self.assertEqual(rescanned.cache, full.cache)
            result = rescanned

    def test_only_named_files_are_read(self) -> None:
        """One named file: one hash; an unnamed change is not seen."""
        write_tree(self.home, {"etc/lists/audit-keys": (b"changed, unnamed\n", 1e9),
                               "etc/client.keys": (b"changed, named\n", 1e9)})
        rescanned = rescan_paths(self.home, self.items, self.first,
                                 [os.path.join(self.home, "etc/client.keys")])
        assert rescanned is not None
        self.assertEqual(rescanned.hashed, 1)
        self.assertEqual(rescanned.files["etc/lists/audit-keys"],
                         self.first.files["etc/lists/audit-keys"])

    def test_what_needs_the_full_scan_returns_none(self) -> None:
        """A symlink, a symlinked directory on the way, a directory holding either or an
        unsafe name: None."""
        os.symlink("/etc/passwd", os.path.join(self.home, "etc/rules/link.xml"))
        os.symlink(os.path.join(self.home, "etc/rules"),
                   os.path.join(self.home, "etc/shared/linked"))
        for name in ("with-link", "with-linked-dir", "with-odd-name"):
            os.makedirs(os.path.join(self.home, "etc/shared", name, "sub"))
        os.symlink("/etc/passwd", os.path.join(self.home, "etc/shared/with-link/sub/a.conf"))
        os.symlink("/etc", os.path.join(self.home, "etc/shared/with-linked-dir/etc"))
        with open(os.path.join(self.home, "etc/shared/with-odd-name/sub/a\nb"), "wb") as f:
            f.write(b"x")
        for relative in ("etc/rules/link.xml", "etc/shared/linked/x.conf",
                         "etc/shared/linked", "etc/shared/with-link",
                         "etc/shared/with-odd-name"):
            self.assertIsNone(rescan_paths(self.home, self.items, self.first,
                                           [os.path.join(self.home, relative)]), relative)

    def test_a_new_directory_is_walked_like_the_full_scan(self) -> None:
        """A directory named by its creation event: every file under it (nested, of any
        item, excluded and uncovered names among them) as the full scan finds them, in
        30 random rounds that also replace directories the scan knew; files elsewhere
        are not looked at."""
        rng = random.Random(16)
        result = self.first
        names = ["a.conf", "b.xml", "c.swp", "merged.mg", "agent.conf", "deep/d.txt",
                 "deep/er/e.txt", "f.tmp"]
        tops = ["etc/shared/new", "etc/shared/group1", "etc/rules/extra", "etc/rules/n",
                "etc/lists/sub", "var/multigroups", "var/multigroups/77aa", "etc/other"]
        for _ in range(30):
            top = rng.choice(tops)
            absolute = os.path.join(self.home, top)
            if os.path.isdir(absolute):
                shutil.rmtree(absolute)
            for name in rng.sample(names, rng.randrange(0, len(names))):
                path = os.path.join(absolute, name)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(os.urandom(rng.randrange(1, 64)))
            os.makedirs(absolute, exist_ok=True)
            write_tree(self.home, {"etc/lists/audit-keys": (os.urandom(8), 2e9)})  # unnamed
            rescanned = rescan_paths(self.home, self.items, result, [absolute.encode()])
            assert rescanned is not None, top
            full = scan_items(self.home, self.items)
            unnamed = "etc/lists/audit-keys"
            self.assertEqual(rescanned.files[unnamed], result.files[unnamed])
            full.files[unnamed] = result.files[unnamed]
            full.cache[unnamed] = result.cache[unnamed]
            self.assertEqual(rescanned.files, full.files, top)
            self.assertEqual(rescanned.cache, full.cache, top)
            changed = {p for p in {*result.files, *rescanned.files}
                       if result.files.get(p) != rescanned.files.get(p)}
            assert rescanned.touched is not None
            self.assertLessEqual(changed, set(rescanned.touched))
            result = rescanned
