"""Tests for wazuhcluster.integrity.items."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.integrity.vectors import reference_items, shipped_items
from wazuhcluster.integrity.errors import ItemsConfigError, UnsafePathError
from wazuhcluster.integrity.items import (
    ClusterItem,
    ClusterItems,
    _path_problem_in_full,
    parse_cluster_items,
    path_problem,
    validate_peer_path,
)


class ParseTests(SynchronousTestCase):
    """Parsing the ``files`` object of cluster.json."""

    def test_shipped_items_match_the_reference(self) -> None:
        """Our shipped cluster.json yields the same items as Wazuh 4.7.5's."""
        self.assertEqual(shipped_items(), reference_items())

    def test_item_fields(self) -> None:
        """Keys, permissions, file lists and flags are parsed as documented."""
        items = shipped_items()
        self.assertEqual(
            [item.key for item in items.items],
            [
                "etc/",
                "etc/shared/",
                "var/multigroups/",
                "etc/rules/",
                "etc/decoders/",
                "etc/lists/",
            ],
        )
        etc = items.get("etc/")
        shared = items.get("etc/shared/")
        assert etc is not None and shared is not None
        self.assertEqual(
            (etc.permissions, etc.files, etc.recursive), (0o640, {"client.keys"}, False)
        )
        self.assertEqual((shared.permissions, shared.files), (0o660, None))
        self.assertTrue(shared.remove_subdirs_if_empty)
        self.assertFalse(shared.extra_valid)
        self.assertEqual(items.excluded_files, {"ar.conf", "ossec.conf"})
        self.assertEqual(items.excluded_extensions, ("~", ".tmp", ".lock", ".swp"))

    def test_bad_permissions_are_rejected(self) -> None:
        """A permission string that is not a number raises ItemsConfigError."""
        self.assertRaises(
            ItemsConfigError, parse_cluster_items, {"etc/": {"permissions": "rw", "files": ["all"]}}
        )

    def test_bad_item_key_is_rejected(self) -> None:
        """Item keys must be relative directories ending in a slash."""
        for key in ("/etc/", "etc", "../etc/", "etc//"):
            self.assertRaises(
                ItemsConfigError, parse_cluster_items, {key: {"permissions": "0o640"}}
            )

    def test_all_only_when_alone(self) -> None:
        """``["all", "x"]`` is a list of two names, as in Wazuh, not a wildcard."""
        items = parse_cluster_items(
            {"d/": {"permissions": "0o600", "files": ["all", "x"], "recursive": True}}
        )
        self.assertIsNotNone(items.item_for("d/x"))
        self.assertIsNone(items.item_for("d/y"))


class ItemForTests(SynchronousTestCase):
    """Which item a relative path belongs to."""

    def setUp(self) -> None:
        """Use the shipped items."""
        self.items = shipped_items()

    def key(self, path: str) -> str | None:
        """Return the key of the item covering ``path``."""
        item = self.items.item_for(path)
        return None if item is None else item.key

    def test_non_recursive_item_covers_only_listed_top_level_names(self) -> None:
        """``etc/`` covers client.keys only, and only directly in etc/."""
        self.assertEqual(self.key("etc/client.keys"), "etc/")
        self.assertIsNone(self.key("etc/internal_options.conf"))
        self.assertIsNone(self.key("etc/sub/client.keys"))

    def test_recursive_item_covers_subdirectories(self) -> None:
        """``etc/shared/`` covers any file at any depth."""
        self.assertEqual(self.key("etc/shared/default/agent.conf"), "etc/shared/")
        self.assertEqual(self.key("etc/shared/a/b/c/d.txt"), "etc/shared/")

    def test_multigroups_take_only_merged_mg(self) -> None:
        """``var/multigroups/`` only covers files named merged.mg."""
        self.assertEqual(self.key("var/multigroups/abc/merged.mg"), "var/multigroups/")
        self.assertIsNone(self.key("var/multigroups/abc/other.txt"))

    def test_excluded_names_anywhere_and_suffixes(self) -> None:
        """Excluded base names and suffixes are never covered, at any depth."""
        for path in (
            "etc/shared/ar.conf",
            "etc/shared/default/ossec.conf",
            "etc/rules/x.xml~",
            "etc/lists/a.tmp",
            "etc/shared/a.lock",
            "etc/shared/g/.x.swp",
        ):
            self.assertIsNone(self.key(path), path)

    def test_outside_every_item(self) -> None:
        """Paths outside all items are not covered; neither is an item directory itself."""
        for path in ("etc/ossec.conf", "bin/wazuh-control", "etc/shared", "etc/shared/"):
            self.assertIsNone(self.key(path), path)


class ValidatePeerPathTests(SynchronousTestCase):
    """The strict validator for paths that come from a peer."""

    def setUp(self) -> None:
        """Use the shipped items."""
        self.items = shipped_items()

    def reason(self, path: object) -> str:
        """Return the refusal reason for ``path`` (failing if it is accepted)."""
        error = self.assertRaises(UnsafePathError, validate_peer_path, path, self.items)
        reason: str = error.reason
        return reason

    def test_accepts_and_returns_item_paths(self) -> None:
        """A well-formed path inside an item is returned unchanged."""
        self.assertEqual(
            validate_peer_path("etc/shared/default/agent.conf", self.items),
            "etc/shared/default/agent.conf",
        )

    def test_refuses_traversal(self) -> None:
        """``..`` components are refused wherever they are."""
        for path in ("../etc/shared/x", "etc/shared/../../../etc/passwd", "etc/shared/.."):
            self.assertEqual(self.reason(path), "parent component")

    def test_refuses_absolute(self) -> None:
        """Absolute paths are refused."""
        self.assertEqual(self.reason("/etc/shared/x"), "absolute")

    def test_refuses_nul_backslash_and_control(self) -> None:
        """NUL bytes, backslashes and control characters are refused."""
        self.assertEqual(self.reason("etc/shared/a\x00b"), "nul byte")
        self.assertEqual(self.reason("etc/shared\\x"), "backslash")
        self.assertEqual(self.reason("etc/shared/a\nb"), "control character")

    def test_refuses_empty_and_dot_components(self) -> None:
        """Empty paths, empty components (and so both separators) and ``.`` are refused."""
        self.assertEqual(self.reason(""), "empty")
        self.assertEqual(self.reason("etc/shared//x"), "empty component")
        self.assertEqual(self.reason("etc/shared/x/"), "empty component")
        self.assertEqual(self.reason("etc/shared/a|@@//@@|b"), "empty component")
        self.assertEqual(self.reason("etc/shared/./x"), "dot component")

    def test_refuses_non_strings_and_unencodable(self) -> None:
        """Non-strings and lone surrogates are refused."""
        self.assertEqual(self.reason(b"etc/shared/x"), "not a string")
        self.assertEqual(self.reason("etc/shared/\udcff"), "not utf-8")

    def test_refuses_paths_outside_items(self) -> None:
        """Well-formed paths that no item covers (or excluded names) are refused."""
        for path in ("etc/ossec.conf", "bin/x", "etc/shared/ar.conf", "var/multigroups/a/x"):
            self.assertEqual(self.reason(path), "outside cluster items")


def item_for_reference(items: ClusterItems, path: str) -> ClusterItem | None:
    """The matching rule written out: the longest key that covers the path and the name
    (the first of equal keys), as item_for worked before it remembered directories."""
    name = path.rsplit("/", 1)[-1]
    if not name or items.is_excluded(name):
        return None
    best: ClusterItem | None = None
    for item in items.items:
        if not path.startswith(item.key):
            continue
        rest = path[len(item.key):]
        if not rest or (not item.recursive and "/" in rest) or not item.covers_name(name):
            continue
        if best is None or len(item.key) > len(best.key):
            best = item
    return best


_COMPONENTS = st.sampled_from(["etc", "shared", "rules", "default", "lists", "queue",
                               "agent-groups", "x", ".", "..", ".hidden", "..x", "a b", "é",
                               "a\\b", "\x00", "\x7f", "", "merged.mg", "agent.conf", "ar.conf",
                               "a.swp", "client.keys", "decoders", "cdb", "k" * 256, "k" * 255])


class FastPathTests(SynchronousTestCase):
    """The shortcuts give the same answers as the rules written out."""

    @given(st.lists(_COMPONENTS, min_size=1, max_size=6), st.booleans())
    def test_path_problem_same_as_in_full(self, parts: list[str], absolute: bool) -> None:
        """Random paths of tricky components: the one-expression check agrees."""
        path = ("/" if absolute else "") + "/".join(parts)
        self.assertEqual(path_problem(path), _path_problem_in_full(path), path)

    @given(st.text(alphabet=st.characters(max_codepoint=0x7f), max_size=40))
    def test_path_problem_same_as_in_full_for_any_ascii(self, path: str) -> None:
        """Any ASCII text."""
        self.assertEqual(path_problem(path), _path_problem_in_full(path), path)

    def test_long_paths(self) -> None:
        """At and over the length limits."""
        for path in ("a/" * 2047 + "ab", "a/" * 2048, "k" * 255, "k" * 256, "." + "k" * 254,
                     "." + "k" * 255):
            self.assertEqual(path_problem(path), _path_problem_in_full(path), len(path))

    @given(st.lists(_COMPONENTS, min_size=1, max_size=5))
    def test_item_for_same_as_reference(self, parts: list[str]) -> None:
        """Shipped and Wazuh's reference items, asked twice (the second from memory)."""
        path = "/".join(parts)
        for items in (shipped_items(), reference_items()):
            for _ in range(2):
                self.assertEqual(items.item_for(path), item_for_reference(items, path), path)
