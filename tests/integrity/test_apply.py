"""Tests for wazuhcluster.integrity.apply."""

from __future__ import annotations

import errno
import json
import os
import stat
import zlib
from typing import Any
from unittest.mock import patch

from twisted.trial.unittest import SynchronousTestCase

from tests.integrity.vectors import make_home, sample_tree, shipped_items, write_tree
from wazuhcluster.integrity.apply import (
    ApplyResult,
    apply_push,
    make_staging_dir,
    recover_staging,
)
from wazuhcluster.integrity.compare import Comparison, compare_metadata
from wazuhcluster.integrity.container import (
    FILE_SEP,
    PATH_SEP,
    ContainerLimits,
    write_sync_container,
)
from wazuhcluster.integrity.errors import ContainerError
from wazuhcluster.integrity.metadata import FileEntry, scan_items

GIB = 1024 * 1024 * 1024


class SimulatedCrash(Exception):
    """Raised by a test's replace function to interrupt an apply."""


def read(home: str, path: str) -> bytes:
    """Content of ``home/path``."""
    with open(os.path.join(home, path), "rb") as f:
        return f.read()


def entry(key: str) -> FileEntry:
    """A metadata entry for ``key`` (hash irrelevant unless verified)."""
    return FileEntry(mod_time=1.0, cluster_item_key=key, merged=False, hash="00")


class ApplyTestsBase(SynchronousTestCase):
    """A master home with the sample tree and a worker home that is out of date."""

    def setUp(self) -> None:
        """Create both homes and the items."""
        base = self.mktemp()
        self.items = shipped_items()
        self.master = make_home(os.path.join(base, "master"))
        self.worker = os.path.join(base, "worker")
        self.outside = os.path.join(base, "outside")
        tree = sample_tree()
        del tree["etc/rules/extra/more_rules.xml"]
        tree["etc/client.keys"] = (b"old keys\n", 1.0)
        tree["etc/shared/default/old.txt"] = (b"old\n", 1.0)
        write_tree(self.worker, tree)
        write_tree(self.outside, {"victim.txt": (b"keep me", 1.0)})
        self.container = os.path.join(base, "push.zip")

    def push(self, comparison: Comparison | None = None) -> Comparison:
        """Write the master's push for the worker (or for ``comparison``) to disk."""
        if comparison is None:
            comparison = compare_metadata(
                scan_items(self.master, self.items).files,
                scan_items(self.worker, self.items).files,
                self.items,
            )
        with open(self.container, "w+b") as f:
            write_sync_container(f, self.master, comparison, max_size=GIB)
        return comparison

    def push_raw(self, files: dict[str, bytes], comparison: Comparison) -> None:
        """Write a container with arbitrary entry names (as a hostile master could)."""
        records = b"".join(
            name.encode() + PATH_SEP + zlib.compress(data) + FILE_SEP
            for name, data in files.items()
        )
        metadata = zlib.compress(json.dumps(comparison.to_json()).encode())
        with open(self.container, "wb") as f:
            f.write(records + b"files_metadata.json" + PATH_SEP + metadata)

    def apply(self, **kwargs: Any) -> ApplyResult:
        """Apply the container to the worker home."""
        return apply_push(
            self.worker, self.items, self.container, "worker-1", limits=ContainerLimits(), **kwargs
        )

    def staging_dirs(self) -> list[str]:
        """Staging directories currently present."""
        node = os.path.join(self.worker, "queue", "cluster", "worker-1")
        return (
            [n for n in os.listdir(node) if n.startswith("staging-")] if os.path.isdir(node) else []
        )


class ApplyPushTests(ApplyTestsBase):
    """The normal path: create, update, delete, with item permissions."""

    def test_worker_converges_to_master(self) -> None:
        """After one push the worker's metadata hashes equal the master's."""
        self.push()
        result = self.apply()
        self.assertEqual(result.created, ("etc/rules/extra/more_rules.xml",))
        self.assertEqual(result.updated, ("etc/client.keys",))
        self.assertEqual(result.deleted, ("etc/shared/default/old.txt",))
        self.assertEqual((result.refused, result.failed), ((), ()))
        master = scan_items(self.master, self.items).files
        worker = scan_items(self.worker, self.items).files
        self.assertTrue(compare_metadata(master, worker, self.items).is_empty)
        self.assertEqual(self.staging_dirs(), [])

    def test_permissions_come_from_the_item(self) -> None:
        """client.keys gets 0640 and rules get 0660, whatever the umask."""
        self.push()
        self.apply()
        mode = stat.S_IMODE(os.stat(os.path.join(self.worker, "etc/client.keys")).st_mode)
        self.assertEqual(mode, 0o640)
        rules = os.path.join(self.worker, "etc/rules/extra/more_rules.xml")
        self.assertEqual(stat.S_IMODE(os.stat(rules).st_mode), 0o660)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(rules)).st_mode), 0o770)

    def owner_for_test(self) -> tuple[int, int]:
        """An owner the test process may give: any as root, else its own uid and gid."""
        return (4242, 4343) if os.geteuid() == 0 else (os.geteuid(), os.getegid())

    def test_owner_is_applied_to_files_and_created_directories(self) -> None:
        """With ``owner`` every installed file and created directory gets that uid:gid."""
        owner = self.owner_for_test()
        self.push()
        result = self.apply(owner=owner)
        self.assertEqual(result.failed, ())
        for path in ("etc/client.keys", "etc/rules/extra/more_rules.xml", "etc/rules/extra"):
            st = os.stat(os.path.join(self.worker, path))
            self.assertEqual((st.st_uid, st.st_gid), owner, path)
        mode = stat.S_IMODE(os.stat(os.path.join(self.worker, "etc/client.keys")).st_mode)
        self.assertEqual(mode, 0o640)

    def test_owner_is_applied_on_the_cross_filesystem_path(self) -> None:
        """The copy-then-rename fallback gives the copy the owner too."""
        owner = self.owner_for_test()

        def cross_device(src: str, dst: str, **kwargs: Any) -> None:
            if "src_dir_fd" not in kwargs:
                raise OSError(errno.EXDEV, "Invalid cross-device link")
            os.replace(src, dst, **kwargs)

        self.push()
        self.apply(owner=owner, replace_file=cross_device)
        st = os.stat(os.path.join(self.worker, "etc/client.keys"))
        self.assertEqual((st.st_uid, st.st_gid), owner)

    def test_empty_subdirectories_are_removed(self) -> None:
        """Deleting a group's files removes its emptied directories, not the item dir."""
        write_tree(
            self.worker,
            {
                "etc/shared/gone/sub/a.txt": (b"a", 1.0),
                "etc/shared/gone/b.txt": (b"b", 1.0),
                "etc/shared/gone/ar.conf": (b"local", 1.0),
                "etc/rules/old/x.xml": (b"x", 1.0),
            },
        )
        extra = {
            p: entry("etc/shared/") for p in ("etc/shared/gone/sub/a.txt", "etc/shared/gone/b.txt")
        }
        extra["etc/rules/old/x.xml"] = entry("etc/rules/")
        self.push(Comparison(extra=extra))
        result = self.apply()
        self.assertEqual(len(result.deleted), 3)
        self.assertEqual(result.removed_dirs, ("etc/shared/gone/sub/", "etc/shared/gone/"))
        self.assertFalse(os.path.exists(os.path.join(self.worker, "etc/shared/gone")))
        self.assertTrue(os.path.isdir(os.path.join(self.worker, "etc/shared")))
        # etc/rules/ does not remove empty subdirectories.
        self.assertTrue(os.path.isdir(os.path.join(self.worker, "etc/rules/old")))

    def test_excluded_names_are_never_deleted(self) -> None:
        """An extra entry naming an excluded file is refused and the file stays."""
        self.push(Comparison(extra={"etc/shared/ar.conf": entry("etc/shared/")}))
        result = self.apply()
        self.assertEqual([r.reason for r in result.refused], ["outside cluster items"])
        self.assertTrue(os.path.exists(os.path.join(self.worker, "etc/shared/ar.conf")))

    def test_missing_extra_is_not_an_error(self) -> None:
        """Deleting a file that is already gone does nothing."""
        self.push(Comparison(extra={"etc/shared/nothere/x": entry("etc/shared/")}))
        self.assertEqual(self.apply(), ApplyResult())


class ConfinementTests(ApplyTestsBase):
    """A hostile master cannot write or delete outside the items."""

    def test_traversal_and_absolute_paths_are_refused(self) -> None:
        """Bad names in the metadata and in the container are refused; nothing escapes."""
        names = [
            "../outside/victim.txt",
            "/etc/passwd",
            "etc/shared/../../x",
            "etc/ossec.conf",
            "bin/wazuh",
            "etc/shared/a\x00b",
        ]
        comparison = Comparison(
            missing={n: entry("etc/shared/") for n in names},
            extra={"../outside/victim.txt": entry("etc/shared/")},
        )
        self.push_raw({n: b"evil" for n in names if "\x00" not in n}, comparison)
        result = self.apply()
        self.assertEqual((result.created, result.updated, result.deleted), ((), (), ()))
        refused = {r.path for r in result.refused}
        self.assertEqual(refused, set(names))
        self.assertEqual(read(self.outside, "victim.txt"), b"keep me")
        self.assertEqual(read(self.worker, "etc/ossec.conf"), sample_tree()["etc/ossec.conf"][0])
        self.assertFalse(os.path.exists(os.path.join(self.worker, "bin")))

    def test_symlinked_directory_is_refused(self) -> None:
        """A path through a worker directory that is a symlink is neither written nor deleted."""
        os.symlink(self.outside, os.path.join(self.worker, "etc/shared/evil"))
        self.push_raw(
            {"etc/shared/evil/new.txt": b"evil"},
            Comparison(
                missing={"etc/shared/evil/new.txt": entry("etc/shared/")},
                extra={"etc/shared/evil/victim.txt": entry("etc/shared/")},
            ),
        )
        result = self.apply()
        self.assertEqual(
            {(r.path, r.reason) for r in result.refused},
            {
                ("etc/shared/evil/new.txt", "symlink in path"),
                ("etc/shared/evil/victim.txt", "symlink in path"),
            },
        )
        self.assertEqual(sorted(os.listdir(self.outside)), ["victim.txt"])

    def test_item_key_mismatch_is_refused(self) -> None:
        """The master's cluster_item_key must be the item our cluster.json assigns."""
        self.push_raw({"etc/shared/x": b"x"}, Comparison(missing={"etc/shared/x": entry("etc/")}))
        [refusal] = self.apply().refused
        self.assertIn("cluster_item_key", refusal.reason)

    def test_listed_file_absent_from_container_is_refused(self) -> None:
        """A missing/shared path without a container entry is refused."""
        self.push_raw({}, Comparison(missing={"etc/shared/x": entry("etc/shared/")}))
        self.assertEqual([r.reason for r in self.apply().refused], ["not in container"])

    def test_hash_verification(self) -> None:
        """With verify_hashes a content whose digest differs from the metadata is refused."""
        self.push_raw(
            {"etc/shared/x": b"x"}, Comparison(missing={"etc/shared/x": entry("etc/shared/")})
        )
        self.assertEqual(
            [r.reason for r in self.apply(verify_hashes=True).refused], ["hash mismatch"]
        )
        self.assertFalse(os.path.exists(os.path.join(self.worker, "etc/shared/x")))


class AtomicityTests(ApplyTestsBase):
    """Every file is old or new after a failure, never partial."""

    def setUp(self) -> None:
        """Make the master push three updated files."""
        super().setUp()
        self.paths = [
            "etc/shared/default/agent.conf",
            "etc/shared/default/merged.mg",
            "etc/shared/group1/agent.conf",
        ]
        write_tree(self.master, {p: (b"NEW " + p.encode() * 100, 2.0) for p in self.paths})
        self.old = {p: read(self.worker, p) for p in self.paths}
        self.push()

    def test_crash_mid_apply_leaves_old_or_new(self) -> None:
        """A crash on the second of three renames: one file new, two old, staging cleaned."""

        def crashing_replace(src: str, dst: str, **kwargs: Any) -> None:
            if dst == "merged.mg":
                raise SimulatedCrash()
            os.replace(src, dst, **kwargs)

        self.assertRaises(SimulatedCrash, self.apply, replace_file=crashing_replace)
        contents = {p: read(self.worker, p) for p in self.paths}
        new = [p for p in self.paths if contents[p] != self.old[p]]
        self.assertEqual(new, ["etc/shared/default/agent.conf"])
        for p in new:
            self.assertEqual(contents[p], read(self.master, p))
        self.assertEqual(self.staging_dirs(), [])

    def test_failed_rename_is_reported_and_others_continue(self) -> None:
        """An OSError on one file is reported; that file stays old, the others are new."""

        def failing_replace(src: str, dst: str, **kwargs: Any) -> None:
            if dst == "merged.mg":
                raise OSError(errno.EIO, "I/O error")
            os.replace(src, dst, **kwargs)

        result = self.apply(replace_file=failing_replace)
        self.assertEqual(
            [(r.path, r.reason) for r in result.failed],
            [("etc/shared/default/merged.mg", "I/O error")],
        )
        self.assertEqual(
            read(self.worker, "etc/shared/default/merged.mg"),
            self.old["etc/shared/default/merged.mg"],
        )
        self.assertEqual(
            read(self.worker, "etc/shared/group1/agent.conf"),
            read(self.master, "etc/shared/group1/agent.conf"),
        )

    def test_cross_filesystem_fallback(self) -> None:
        """EXDEV from the staging rename falls back to copy-then-rename in the target dir."""

        def cross_device(src: str, dst: str, **kwargs: Any) -> None:
            if "src_dir_fd" not in kwargs:
                raise OSError(errno.EXDEV, "Invalid cross-device link")
            os.replace(src, dst, **kwargs)

        result = self.apply(replace_file=cross_device)
        self.assertEqual(result.failed, ())
        for p in self.paths:
            self.assertEqual(read(self.worker, p), read(self.master, p))
            self.assertFalse(
                os.path.exists(
                    os.path.join(
                        self.worker, os.path.dirname(p), "." + os.path.basename(p) + ".tmp"
                    )
                )
            )

    def test_cross_filesystem_copy_is_flushed_before_its_rename_with_barriers(self) -> None:
        """With barriers (no per-file fsync) the copy made after the first barrier is still
        fsynced before it is renamed over the target."""
        events: list[str] = []
        real_fsync = os.fsync

        def cross_device(src: str, dst: str, **kwargs: Any) -> None:
            if "src_dir_fd" not in kwargs:
                raise OSError(errno.EXDEV, "Invalid cross-device link")
            events.append("rename " + dst)
            os.replace(src, dst, **kwargs)

        def fsync(fd: int) -> None:
            events.append("fsync")
            real_fsync(fd)

        with patch("wazuhcluster.integrity.apply.os.fsync", fsync), \
                patch("wazuhcluster.integrity.apply.SMALL_PUSH_FILES", 0):
            result = self.apply(replace_file=cross_device, fsync=False,
                                barrier=lambda: events.append("barrier"))
        self.assertEqual(result.failed, ())
        renames = [i for i, e in enumerate(events) if e.startswith("rename")]
        self.assertEqual(len(renames), len(result.created) + len(result.updated))
        self.assertGreater(len(renames), 0)
        self.assertEqual(events.count("barrier"), 2)
        for i in renames:
            self.assertEqual(events[i - 1], "fsync")
        self.assertEqual(events[-1], "barrier")

    def test_broken_container_changes_nothing(self) -> None:
        """A truncated container raises before any file is touched."""
        with open(self.container, "r+b") as f:
            f.truncate(os.path.getsize(self.container) - 3)
        self.assertRaises(ContainerError, self.apply)
        for p in self.paths:
            self.assertEqual(read(self.worker, p), self.old[p])
        self.assertEqual(self.staging_dirs(), [])

    def test_recover_staging_removes_leftovers(self) -> None:
        """Leftover staging directories from a crash are removed at start-up."""
        leftover = make_staging_dir(self.worker, "worker-1")
        write_tree(leftover, {"00000000": (b"half", 1.0)})
        self.assertEqual(recover_staging(self.worker), [leftover])
        self.assertEqual(self.staging_dirs(), [])
        self.assertEqual(recover_staging(self.worker), [])
