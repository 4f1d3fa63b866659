"""Tests for wazuhcluster.integrity.container."""

from __future__ import annotations

import base64
import io
import json
import os
import tracemalloc
import zlib
from unittest.mock import patch

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.integrity.vectors import load_bytes, load_json, make_home, shipped_items, write_tree
from wazuhcluster.integrity.compare import Comparison, compare_metadata
from wazuhcluster.integrity.container import (
    FILE_SEP,
    PATH_SEP,
    SMALL_FILE_SIZE,
    AddOutcome,
    ContainerLimits,
    ContainerWriter,
    ExtractedContainer,
    RecordCache,
    SyncContainer,
    _stored_first,
    extract_container,
    read_container_bytes,
    write_metadata_container,
    write_sync_container,
)
from wazuhcluster.integrity.errors import ContainerError
from wazuhcluster.integrity.metadata import metadata_from_json, scan_items

GIB = 1024 * 1024 * 1024


def reference_split(data: bytes) -> dict[str, bytes]:
    """Decode a container the way Wazuh 4.7.5's reader does (split on separators)."""
    result = {}
    for record in data.split(FILE_SEP):
        name, content = record.split(PATH_SEP, 1)
        result[name.decode()] = zlib.decompress(content)
    return result


def container(records: list[tuple[bytes, bytes]], metadata: bytes = b"{}") -> bytes:
    """Assemble a container by hand from already-compressed records."""
    body = b"".join(name + PATH_SEP + data + FILE_SEP for name, data in records)
    return body + b"files_metadata.json" + PATH_SEP + zlib.compress(metadata, 1)


def zero_bomb(size: int) -> bytes:
    """A valid zlib stream of ``size`` zero bytes (a multiple of 1 MiB), built in ~1 ms.

    After a full flush deflate restarts from a clean state, so compressing the same
    1 MiB block again yields the same bytes; we repeat them and fix the Adler-32 trailer
    (for zeros: a = 1, b = size mod 65521).
    """
    block = 1024 * 1024
    compressor = zlib.compressobj(9)
    first = compressor.compress(bytes(block)) + compressor.flush(zlib.Z_FULL_FLUSH)
    repeat = compressor.compress(bytes(block)) + compressor.flush(zlib.Z_FULL_FLUSH)
    tail = compressor.flush()[:-4]  # final empty block, without the checksum
    adler = ((size % 65521) << 16) | 1
    return first + repeat * (size // block - 1) + tail + adler.to_bytes(4, "big")


class VectorTests(SynchronousTestCase):
    """Decoding and re-encoding the containers produced by Wazuh 4.7.5."""

    def test_decode_master_push(self) -> None:
        """master_to_worker_sync.zip holds two files and the comparison."""
        decoded = read_container_bytes(load_bytes("master_to_worker_sync.zip"))
        self.assertEqual(list(decoded.files), ["etc/client.keys", "etc/rules/extra/more_rules.xml"])
        self.assertEqual(
            decoded.files["etc/rules/extra/more_rules.xml"], b'<group name="more,"></group>\n'
        )
        self.assertEqual(decoded.metadata, load_json("compare_files_result.json"))

    def test_decode_worker_upload(self) -> None:
        """worker_integrity_check.zip holds only files_metadata.json."""
        decoded = read_container_bytes(load_bytes("worker_integrity_check.zip"))
        self.assertEqual(decoded.files, {})
        self.assertEqual(decoded.metadata, load_json("worker_files_status.json"))

    def test_full_pipeline_reproduces_master_push_byte_for_byte(self) -> None:
        """scan -> compare -> write_sync_container equals Wazuh's container exactly."""
        home = make_home(self.mktemp())
        items = shipped_items()
        comparison = compare_metadata(
            scan_items(home, items).files,
            metadata_from_json(load_json("worker_files_status.json")),
            items,
        )
        out = io.BytesIO()
        result = write_sync_container(out, home, comparison, max_size=GIB)
        self.assertEqual(out.getvalue(), load_bytes("master_to_worker_sync.zip"))
        self.assertEqual(result.included, ("etc/client.keys", "etc/rules/extra/more_rules.xml"))

    def test_progress_reports_only_final_bytes(self) -> None:
        """With a progress callback the bytes are the same; every report is a final prefix."""
        home = make_home(self.mktemp())
        items = shipped_items()
        comparison = compare_metadata(
            scan_items(home, items).files,
            metadata_from_json(load_json("worker_files_status.json")),
            items,
        )
        out = io.BytesIO()
        reports: list[tuple[int, bytes]] = []
        with patch("wazuhcluster.integrity.container.PROGRESS_STEP", 1):
            write_sync_container(out, home, comparison, max_size=GIB,
                                 progress=lambda n: reports.append((n, out.getvalue()[:n])))
        expected = load_bytes("master_to_worker_sync.zip")
        self.assertEqual(out.getvalue(), expected)
        self.assertEqual(reports[-1][0], len(expected))
        self.assertGreater(len(reports), 2)
        for size, prefix in reports:
            self.assertEqual(prefix, expected[:size])

    def test_reencode_all_items(self) -> None:
        """Re-encoding all_items.zip from its decoded parts gives the same bytes."""
        original = load_bytes("all_items.zip")
        decoded = read_container_bytes(original)
        out = io.BytesIO()
        writer = ContainerWriter(out, compress_level=1)
        for name, content in decoded.files.items():
            self.assertIs(writer.add_bytes(name, content), AddOutcome.INCLUDED)
        writer.finish(decoded.metadata)
        self.assertEqual(out.getvalue(), original)

    def test_reencode_worker_upload(self) -> None:
        """write_metadata_container reproduces worker_integrity_check.zip."""
        original = load_bytes("worker_integrity_check.zip")
        metadata = metadata_from_json(read_container_bytes(original).metadata)
        out = io.BytesIO()
        write_metadata_container(out, metadata)
        self.assertEqual(out.getvalue(), original)


class WriterLimitTests(SynchronousTestCase):
    """max_zip_size handling (Wazuh 4.7.5 semantics)."""

    def setUp(self) -> None:
        """Five incompressible 1000-byte files and one 5000-byte file."""
        self.home = self.mktemp()
        self.tree = {f"etc/shared/g/f{i}": (os.urandom(1000), 1.0) for i in range(5)}
        self.tree["etc/shared/g/big"] = (os.urandom(5000), 1.0)
        write_tree(self.home, self.tree)
        files = scan_items(self.home, shipped_items()).files
        self.comparison = Comparison(missing=files)

    def test_rounds_until_everything_is_sent(self) -> None:
        """Each round takes what fits; the rest is deferred; too-large files are dropped."""
        pending = self.comparison
        rounds = []
        too_large: list[str] = []
        while pending.missing:
            out = io.BytesIO()
            result = write_sync_container(out, self.home, pending, max_size=2500)
            self.assertLessEqual(result.size, 2500)
            self.assertEqual(
                len(out.getvalue()) - result.size, len(out.getvalue().split(FILE_SEP)[-1])
            )
            too_large.extend(result.too_large)
            decoded = read_container_bytes(out.getvalue())
            self.assertEqual(list(decoded.files), list(result.included))
            self.assertEqual(
                sorted(Comparison.from_json(decoded.metadata).missing), sorted(result.included)
            )
            rounds.append(result.included)
            pending = Comparison(
                missing={p: e for p, e in pending.missing.items() if p in result.deferred}
            )
        self.assertEqual(too_large, ["etc/shared/g/big"])
        self.assertEqual([len(r) for r in rounds], [2, 2, 1])
        sent = sorted(p for r in rounds for p in r)
        self.assertEqual(sent, sorted(p for p in self.tree if p != "etc/shared/g/big"))

    def test_vanished_shared_file_becomes_extra(self) -> None:
        """A shared file missing on disk is moved to extra in the written metadata."""
        entry = self.comparison.missing["etc/shared/g/f0"]
        comparison = Comparison(shared={"etc/shared/g/gone": entry})
        out = io.BytesIO()
        result = write_sync_container(out, self.home, comparison, max_size=GIB)
        self.assertEqual(result.vanished, ("etc/shared/g/gone",))
        metadata = Comparison.from_json(read_container_bytes(out.getvalue()).metadata)
        self.assertEqual(list(metadata.extra), ["etc/shared/g/gone"])

    def test_symlinked_source_is_not_read(self) -> None:
        """The writer refuses to follow a symlink in place of a source file."""
        link = os.path.join(self.home, "etc/shared/g/link")
        os.symlink(os.path.join(self.home, "etc/shared/g/f0"), link)
        writer = ContainerWriter(io.BytesIO())
        self.assertIs(writer.add_file("etc/shared/g/link", link), AddOutcome.UNREADABLE)


class SeparatorTests(SynchronousTestCase):
    """Content that contains the record separator."""

    def test_writer_avoids_separator_in_compressed_data(self) -> None:
        """At level 0 the separator would be stored verbatim; we re-compress instead."""
        content = b"before" + FILE_SEP + b"after" + PATH_SEP
        self.assertIn(FILE_SEP, zlib.compress(content, 0))
        out = io.BytesIO()
        writer = ContainerWriter(out, compress_level=0)
        self.assertIs(writer.add_bytes("etc/shared/x", content), AddOutcome.INCLUDED)
        writer.finish({})
        # A reference (split-based) reader and ours both get the content back.
        self.assertEqual(reference_split(out.getvalue())["etc/shared/x"], content)
        self.assertEqual(read_container_bytes(out.getvalue()).files["etc/shared/x"], content)

    def test_reader_is_not_fooled_by_separator_in_data(self) -> None:
        """A reference container whose zlib data contains the separator still decodes."""
        content = b"a" + FILE_SEP + b"b"
        data = container([(b"etc/shared/x", zlib.compress(content, 0))])
        self.assertEqual(read_container_bytes(data).files["etc/shared/x"], content)

    def test_separator_ending_the_data_is_detected(self) -> None:
        """Data ending with a prefix of the separator is caught across the join."""
        writer = ContainerWriter(io.BytesIO(), compress_level=0)
        self.assertIs(writer.add_bytes("etc/shared/y", FILE_SEP[:-1]), AddOutcome.INCLUDED)


class StoredFirstTests(SynchronousTestCase):
    """Content that does not compress is stored (zlib level 0), on both writing paths."""

    def record(self, data: bytes, streamed: bool, level: int = 1) -> bytes:
        """The zlib stream of ``data``'s record, after checking that both readers get
        ``data`` back."""
        out = io.BytesIO()
        writer = ContainerWriter(out, compress_level=level)
        with patch("wazuhcluster.integrity.container.SMALL_FILE_SIZE",
                   -1 if streamed else SMALL_FILE_SIZE):
            self.assertIs(writer.add_bytes("etc/shared/g/f", data), AddOutcome.INCLUDED)
        writer.finish({})
        value = out.getvalue()
        self.assertEqual(read_container_bytes(value).files["etc/shared/g/f"], data)
        self.assertEqual(reference_split(value)["etc/shared/g/f"], data)
        return value.split(PATH_SEP, 1)[1].split(FILE_SEP, 1)[0]

    def test_random_content_is_stored(self) -> None:
        """4 KiB and 300 KiB of random bytes: stored, no longer than deflate's output."""
        for size in (4096, 300 * 1024):
            data = os.urandom(size)
            for streamed in (False, True):
                record = self.record(data, streamed)
                self.assertEqual(record, zlib.compress(data, 0), (size, streamed))
                self.assertLessEqual(len(record), len(zlib.compress(data, 1)))

    def test_text_and_small_files_are_compressed_as_before(self) -> None:
        """XML is compressed at the configured level; under 2 KiB nothing is probed."""
        text = b"<group name='x'><rule id='100' level='3'/></group>\n" * 80
        small = os.urandom(2047)
        for level in (1, 6):
            for streamed in (False, True):
                self.assertEqual(self.record(text, streamed, level), zlib.compress(text, level))
                self.assertEqual(self.record(small, streamed, level),
                                 zlib.compress(small, level))
        self.assertEqual(self.record(os.urandom(4096), False, 0)[:2], b"\x78\x01")

    def test_stored_records_are_zlib_level_zero_at_every_size(self) -> None:
        """Up to one stored block the record is built without zlib's set-up, byte for
        byte ``zlib.compress(data, 0)``; bigger small files go through zlib."""
        base = os.urandom(SMALL_FILE_SIZE)
        for size in (2048, 4096, 65530, 65531, 65532, 65536, 100000, SMALL_FILE_SIZE):
            data = base[:size]
            self.assertEqual(self.record(data, False), zlib.compress(data, 0), size)
        with patch("wazuhcluster.integrity.container.zlib.compress",
                   wraps=zlib.compress) as compress, \
                patch("wazuhcluster.integrity.container.zlib.compressobj",
                      wraps=zlib.compressobj) as compressobj:
            writer = ContainerWriter(io.BytesIO())
            for i in range(20):
                writer.add_bytes(f"etc/shared/g/{i}", os.urandom(4096))
        self.assertEqual((compress.call_count, compressobj.call_count), (0, 0))

    def test_probe_tells_random_bytes_from_text(self) -> None:
        """Random and already compressed bytes are stored; text in any script, base64 and
        even random printable ASCII are compressed."""
        printable = bytes(range(33, 127))
        samples = {
            "random": (os.urandom(8192), True),
            "gzip": (zlib.compress(os.urandom(3000) + b"<rule/>" * 2000, 9), True),
            "xml": (b"<group name='x'><rule id='100' level='3'/></group>\n" * 100, False),
            "cjk": ("日本語のテキストと中文"
                    "字符。".encode() * 300, False),
            "base64": (base64.b64encode(os.urandom(6000)), False),
            "ascii": (bytes(printable[b % len(printable)] for b in os.urandom(8192)), False),
        }
        for name, (data, stored) in samples.items():
            self.assertEqual(_stored_first(data, 1), stored, name)
            record = self.record(data, False)
            self.assertEqual(record == zlib.compress(data, 0), stored, name)
            self.assertEqual(_stored_first(data, 0), False, name)

    def test_stored_record_holding_the_separator_is_compressed_instead(self) -> None:
        """A random start (so the probe says "store") and then text holding the separator:
        stored, the separator would cut Wazuh's reader, so the record falls back to the
        configured compression."""
        data = os.urandom(512) + b"<rule id='1'/>" * 40 + FILE_SEP + b"<rule id='2'/>" * 200
        for streamed in (False, True):
            record = self.record(data, streamed)
            self.assertNotIn(FILE_SEP, record)
            self.assertEqual(record, zlib.compress(data, 1))
        self.assertIn(FILE_SEP, zlib.compress(data, 0))


class SmallFileTests(SynchronousTestCase):
    """Small files are read whole and compressed in one call; large ones are streamed."""

    def setUp(self) -> None:
        """Incompressible, text, empty, separator-laden and just-too-big-to-be-small files."""
        self.home = self.mktemp()
        self.tree = {f"etc/shared/g/r{i}": (os.urandom(4096), 1.0) for i in range(6)}
        self.tree["etc/shared/g/text"] = (b"<group name='x'/>\n" * 300, 1.0)
        self.tree["etc/shared/g/empty"] = (b"", 1.0)
        self.tree["etc/shared/g/sep"] = (b"a" + FILE_SEP + b"b" + FILE_SEP[:-1], 1.0)
        self.tree["etc/shared/g/large"] = (os.urandom(SMALL_FILE_SIZE + 1), 1.0)
        write_tree(self.home, self.tree)
        self.comparison = Comparison(missing=scan_items(self.home, shipped_items()).files)

    def write(self, level: int, max_size: int, streamed: bool) -> tuple[bytes, SyncContainer]:
        out = io.BytesIO()
        with patch("wazuhcluster.integrity.container.SMALL_FILE_SIZE",
                   -1 if streamed else SMALL_FILE_SIZE):
            result = write_sync_container(out, self.home, self.comparison, max_size=max_size,
                                          compress_level=level)
        return out.getvalue(), result

    def test_same_bytes_and_outcomes_as_the_streaming_path(self) -> None:
        """Levels 1-9: byte for byte the streaming writer's container, under any limit."""
        for level in (1, 6, 9):
            for max_size in (GIB, 20000, 3000):
                small, small_result = self.write(level, max_size, streamed=False)
                streamed, streamed_result = self.write(level, max_size, streamed=True)
                self.assertEqual(small, streamed, (level, max_size))
                self.assertEqual(small_result, streamed_result)
        self.assertIn("etc/shared/g/large", small_result.too_large)

    def test_level_zero_and_separators_round_trip_both_ways(self) -> None:
        """Level 0 (stored data would contain the separator): both paths re-compress."""
        for streamed in (False, True):
            data, result = self.write(0, GIB, streamed)
            self.assertEqual(len(result.included), len(self.tree))
            files = read_container_bytes(data).files
            self.assertEqual(reference_split(data)["etc/shared/g/sep"],
                             self.tree["etc/shared/g/sep"][0])
            self.assertEqual(files, {name: content for name, (content, _) in self.tree.items()})

    def test_file_that_grows_while_read_is_read_whole(self) -> None:
        """A file larger than fstat said is still read to its end (streamed if it grew
        past the small size)."""
        path = os.path.join(self.home, "etc/shared/g/r0")
        real_fstat = os.fstat

        def shrunk(fd: int) -> os.stat_result:
            st = real_fstat(fd)
            return os.stat_result((*st[:6], 10, *st[7:]))  # st_size 10

        for size in (4096, SMALL_FILE_SIZE + 5):
            content = os.urandom(size)
            with open(path, "wb") as f:
                f.write(content)
            out = io.BytesIO()
            writer = ContainerWriter(out)
            with patch("wazuhcluster.integrity.container.os.fstat", shrunk):
                self.assertIs(writer.add_file("etc/shared/g/r0", path), AddOutcome.INCLUDED)
            writer.finish({})
            self.assertEqual(read_container_bytes(out.getvalue()).files["etc/shared/g/r0"],
                             content)

    def test_missing_and_unreadable_sources(self) -> None:
        """A vanished file, a directory and a symbolic link are reported, not raised."""
        writer = ContainerWriter(io.BytesIO())
        g = os.path.join(self.home, "etc/shared/g")
        os.symlink(os.path.join(g, "r1"), os.path.join(g, "link"))
        self.assertIs(writer.add_file("etc/shared/g/nope", os.path.join(g, "nope")),
                      AddOutcome.VANISHED)
        self.assertIs(writer.add_file("etc/shared/g", g), AddOutcome.UNREADABLE)
        self.assertIs(writer.add_file("etc/shared/g/link", os.path.join(g, "link")),
                      AddOutcome.UNREADABLE)


class ReaderLimitTests(SynchronousTestCase):
    """Bounded, strict decoding."""

    def test_zlib_bomb_is_refused_without_allocating(self) -> None:
        """1 GiB of zeros (about 1 MiB compressed) stops at the per-entry limit."""
        bomb = zero_bomb(GIB)
        data = container([(b"etc/shared/bomb", bomb)])
        limits = ContainerLimits(max_entry_size=8 * 1024 * 1024)
        tracemalloc.start()
        try:
            error = self.assertRaises(ContainerError, read_container_bytes, data, limits)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertIn("larger than", str(error))
        self.assertLess(peak, 32 * 1024 * 1024)

    def test_limits_for_zip_size(self) -> None:
        """Limits derived from max_zip_size bound entries by it and leave room for metadata."""
        limits = ContainerLimits.for_zip_size(GIB)
        self.assertEqual(limits.max_entry_size, GIB)
        self.assertEqual(limits.max_container_size, GIB + limits.max_metadata_size)

    def test_total_size_limit(self) -> None:
        """The sum of entries is bounded too."""
        data = container(
            [
                (b"etc/shared/a", zlib.compress(bytes(600))),
                (b"etc/shared/b", zlib.compress(bytes(600))),
            ]
        )
        limits = ContainerLimits(max_total_size=1000)
        self.assertRaises(ContainerError, read_container_bytes, data, limits)

    def test_entry_count_and_container_size_limits(self) -> None:
        """Too many entries or too many bytes are refused."""
        data = container([(f"etc/shared/{i}".encode(), zlib.compress(b"x")) for i in range(5)])
        self.assertRaises(
            ContainerError, read_container_bytes, data, ContainerLimits(max_entries=4)
        )
        self.assertRaises(
            ContainerError,
            read_container_bytes,
            data,
            ContainerLimits(max_container_size=len(data) - 1),
        )
        self.assertEqual(len(read_container_bytes(data, ContainerLimits(max_entries=5)).files), 5)

    def test_truncated_containers_raise(self) -> None:
        """Every proper prefix of a valid container raises ContainerError."""
        data = load_bytes("master_to_worker_sync.zip")
        for end in range(len(data)):
            self.assertRaises(ContainerError, read_container_bytes, data[:end])

    def test_malformed_containers_raise(self) -> None:
        """Garbage, trailing data, missing metadata, long names and duplicates are refused."""
        good = load_bytes("master_to_worker_sync.zip")
        record = b"etc/shared/a" + PATH_SEP + zlib.compress(b"x") + FILE_SEP
        for bad in (
            b"no separator at all",
            good + b"trailing",
            record,
            b"etc/shared/a" + PATH_SEP + b"not zlib" + FILE_SEP,
            b"etc/shared/a" + PATH_SEP + zlib.compress(b"x") + b"XXXXXXXX" + good,
            b"a" * 5000 + PATH_SEP + good,
            record + record + good,
            good + FILE_SEP + good,
        ):
            self.assertRaises(ContainerError, read_container_bytes, bad)
        self.assertRaises(
            ContainerError, read_container_bytes, container([], metadata=b"{not json")
        )


class ExtractTests(SynchronousTestCase):
    """Streaming extraction into a staging directory."""

    def setUp(self) -> None:
        """A staging directory and a container file path."""
        base = self.mktemp()
        self.staging = os.path.join(base, "staging")
        os.makedirs(self.staging)
        self.path = os.path.join(base, "c.zip")

    def extract(self, data: bytes) -> ExtractedContainer:
        """Write ``data`` as the container file and extract it."""
        with open(self.path, "wb") as f:
            f.write(data)
        return extract_container(self.path, self.staging, shipped_items(), ContainerLimits())

    def test_extracts_vector_to_numbered_files(self) -> None:
        """Entries are staged under index names with their size and digest."""
        extracted = self.extract(load_bytes("master_to_worker_sync.zip"))
        staged = extracted.files["etc/rules/extra/more_rules.xml"]
        with open(staged.path, "rb") as f:
            self.assertEqual(f.read(), b'<group name="more,"></group>\n')
        self.assertEqual(os.path.dirname(staged.path), self.staging)
        self.assertEqual(extracted.refused, ())
        self.assertEqual(extracted.metadata, load_json("compare_files_result.json"))

    def test_invalid_names_are_reported_not_written(self) -> None:
        """Traversal, absolute and out-of-item names are refused; nothing is staged for them."""
        names = [
            b"../../etc/passwd",
            b"/etc/passwd",
            b"etc/ossec.conf",
            b"etc/shared/ok",
            b"etc/shared/\xff",
        ]
        extracted = self.extract(container([(n, zlib.compress(b"evil")) for n in names]))
        self.assertEqual(list(extracted.files), ["etc/shared/ok"])
        self.assertEqual(
            [(r.path, r.reason) for r in extracted.refused],
            [
                ("../../etc/passwd", "parent component"),
                ("/etc/passwd", "absolute"),
                ("etc/ossec.conf", "outside cluster items"),
                ("etc/shared/\udcff", "not utf-8"),
            ],
        )
        self.assertEqual(len(os.listdir(self.staging)), 1)


class RoundTripProperty(SynchronousTestCase):
    """Our writer and reader agree on arbitrary file sets."""

    @given(
        files=st.dictionaries(
            st.lists(
                st.text(
                    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="/\\"),
                    min_size=1,
                    max_size=12,
                ).filter(lambda c: c not in (".", "..")),
                min_size=1,
                max_size=3,
            ).map(lambda parts: "etc/shared/" + "/".join(parts)),
            st.binary(max_size=2000),
            max_size=8,
        ),
        level=st.integers(0, 9),
    )
    def test_round_trip(self, files: dict[str, bytes], level: int) -> None:
        """Whatever we write (paths and bytes, including separators) reads back identically."""
        files = {
            name: data
            for name, data in files.items()
            if len(name.encode()) < 4096 and all(len(c.encode()) <= 255 for c in name.split("/"))
        }
        out = io.BytesIO()
        writer = ContainerWriter(out, compress_level=level)
        for name, data in files.items():
            self.assertIs(writer.add_bytes(name, data), AddOutcome.INCLUDED)
        writer.finish({"names": sorted(files)})
        decoded = read_container_bytes(out.getvalue())
        self.assertEqual(decoded.files, files)
        self.assertEqual(decoded.metadata, json.loads(json.dumps({"names": sorted(files)})))
        self.assertEqual(
            reference_split(out.getvalue()),
            {**files, "files_metadata.json": json.dumps({"names": sorted(files)}).encode()},
        )


class RecordCacheTests(SynchronousTestCase):
    """Records of big files compressed once and shared by later containers."""

    def setUp(self) -> None:
        self.home = self.mktemp()
        self.tree = {"etc/client.keys": (os.urandom(12000), 1.0),
                     "etc/shared/g/small": (b"small file\n", 1.0)}
        write_tree(self.home, self.tree)
        self.cache = RecordCache(os.path.join(self.home, "cache"), min_size=1000)
        files = scan_items(self.home, shipped_items()).files
        self.comparison = Comparison(missing=files)

    def write(self, max_size: int = GIB, cache: RecordCache | None = None) -> tuple[
            bytes, SyncContainer]:
        out = io.BytesIO()
        result = write_sync_container(out, self.home, self.comparison, max_size=max_size,
                                      cache=cache)
        return out.getvalue(), result

    def test_same_bytes_compressed_once(self) -> None:
        """Containers written with the cache are byte-identical to ones written without, and
        the big file is compressed only for the first."""
        plain, _ = self.write()
        first, _ = self.write(cache=self.cache)
        self.assertEqual((self.cache.stored, self.cache.hits), (1, 0))
        with patch("wazuhcluster.integrity.container.zlib.compressobj",
                   wraps=zlib.compressobj) as compressobj, \
                patch("wazuhcluster.integrity.container.zlib.compress",
                      wraps=zlib.compress) as compress:
            second, result = self.write(cache=self.cache)
        self.assertEqual((self.cache.stored, self.cache.hits), (1, 1))
        self.assertEqual(first, plain)
        self.assertEqual(second, plain)
        # the small file (read whole, one zlib.compress) and the metadata (streamed); the
        # big file's record is copied from the cache
        self.assertEqual((compress.call_count, compressobj.call_count), (1, 1))
        self.assertEqual(sorted(result.included), sorted(self.tree))
        self.assertEqual(reference_split(second)["etc/client.keys"],
                         self.tree["etc/client.keys"][0])

    def test_changed_file_is_compressed_again(self) -> None:
        """A file rewritten with other content of the same size never gets the old record."""
        self.write(cache=self.cache)
        path = os.path.join(self.home, "etc/client.keys")
        new = os.urandom(12000)
        with open(path, "r+b") as f:  # in place: same inode, same size
            f.write(new)
        os.utime(path, (1.0, 1.0))  # even the same mtime: the ctime still moves
        data, _ = self.write(cache=self.cache)
        self.assertEqual(self.cache.hits, 0)
        self.assertEqual(read_container_bytes(data).files["etc/client.keys"], new)

    def test_limits_apply_to_a_cached_record(self) -> None:
        """Deferred and too-large outcomes are the same as without the cache."""
        self.write(cache=self.cache)
        for limit, outcome in ((12005, "deferred"), (2000, "too_large")):
            # 12 005: the file (12 000 random bytes) fits, its compressed record does not
            plain, plain_result = self.write(max_size=limit)
            cached, cached_result = self.write(max_size=limit, cache=self.cache)
            self.assertEqual(cached, plain)
            self.assertEqual(cached_result, plain_result)
            self.assertIn("etc/client.keys", getattr(cached_result, outcome))
        self.assertEqual(self.cache.hits, 2)

    def test_missing_cached_copy_falls_back(self) -> None:
        """A record file removed behind the cache's back: compressed again, same bytes."""
        plain, _ = self.write(cache=self.cache)
        for name in os.listdir(self.cache.directory):
            os.unlink(os.path.join(self.cache.directory, name))
        again, _ = self.write(cache=self.cache)
        self.assertEqual(again, plain)
        self.assertEqual(self.cache.stored, 2)

    def test_bounded(self) -> None:
        """At most max_entries records are kept on disk, the oldest dropped first."""
        cache = RecordCache(os.path.join(self.home, "bounded"), min_size=1, max_entries=1)
        self.write(cache=cache)
        self.assertEqual(len(os.listdir(cache.directory)), 1)
