"""Long strings and file transfers: limits, confinement, round trips."""

from __future__ import annotations

import hashlib
import os
import threading

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase

from tests.protocol.test_handler import RecordingHandler
from tests.support import VECTOR_KEY, connected_pair, short_tempdir
from wazuhcluster.checksums.threaded import SynchronousRunner
from wazuhcluster.errors import ClusterError
from wazuhcluster.protocol.chunks import REQUEST_CHUNK
from wazuhcluster.protocol.commands import ERR, OK, Reply
from wazuhcluster.protocol.crypto import FernetCodec
from wazuhcluster.protocol.handler import ClusterProtocol
from wazuhcluster.protocol.transfers import (
    CommonResponders,
    FileReceiver,
    FollowedFile,
    FollowError,
    GrowingFile,
    StringStore,
    send_file,
    send_string,
)


class StringStoreTests(SynchronousTestCase):
    """new_str / str_upd / err_str bookkeeping."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = StringStore(self.clock, max_string=1000, max_total=1500, ttl=60)

    def test_round_trip(self) -> None:
        """A string announced, filled and taken comes back whole, then is gone."""
        string_id = self.store.new(b"10")
        self.store.update(string_id + b" hello")
        self.store.update(string_id + b" world!!!")
        self.assertEqual(self.store.take(string_id), b"helloworld")
        self.assertRaises(ClusterError, self.store.take, string_id)

    def test_no_preallocation(self) -> None:
        """Announcing a length allocates nothing until data arrives."""
        string_id = self.store.new(b"1000")
        self.assertEqual(self.store.take(string_id), b"")

    def test_oversized_announcement_refused(self) -> None:
        """A length above the limit is refused with 3050."""
        with self.assertRaises(ClusterError) as ctx:
            self.store.new(b"1001")
        self.assertEqual(ctx.exception.code, 3050)

    def test_total_of_unconsumed_strings_is_bounded(self) -> None:
        """Unconsumed strings cannot exceed max_total together."""
        self.store.new(b"1000")
        self.assertRaises(ClusterError, self.store.new, b"600")

    def test_unconsumed_strings_expire(self) -> None:
        """A string never taken is dropped after its TTL."""
        string_id = self.store.new(b"1000")
        self.clock.advance(61)
        self.store.new(b"5")
        self.assertRaises(ClusterError, self.store.take, string_id)

    def test_err_str_forgets_an_unwritten_string(self) -> None:
        """err_str deletes one never-written string of that length."""
        string_id = self.store.new(b"7")
        self.assertEqual(self.store.cancel(b"7"), string_id)
        self.assertEqual(self.store.cancel(b"7"), b"None")

    def test_garbage_length_is_refused(self) -> None:
        """A non-numeric length is a 3036 error, not a crash."""
        self.assertRaises(ClusterError, self.store.new, b"abc")


class FileReceiverTests(SynchronousTestCase):
    """new_file paths are confined to queue/cluster/<peer>/<plain name>."""

    def setUp(self) -> None:
        self.home = short_tempdir(self)
        os.makedirs(os.path.join(self.home, "queue", "cluster", "worker1"))
        self.receiver = FileReceiver(self.home, SynchronousRunner().run, max_file=100)
        self.receiver.directory_name = b"worker1"

    def test_traversal_and_foreign_paths_are_refused(self) -> None:
        """Absolute, traversal, other-node and nested paths never resolve."""
        for bad in (b"/etc/passwd", b"/queue/cluster/worker1/../../../etc/x",
                    b"/queue/cluster/worker2/a.zip", b"/queue/cluster/worker1/sub/a.zip",
                    b"/queue/cluster/worker1/..", b"/queue/cluster/worker1/.hidden",
                    b"queue/cluster/worker1/a.zip", b"/queue/cluster/worker1/a\x00b"):
            self.assertRaises(ClusterError, self.receiver.resolve, bad)

    def test_no_transfer_before_the_peer_is_known(self) -> None:
        """Without a directory (before hello, or on the local socket) nothing is written."""
        self.receiver.directory_name = None
        self.assertRaises(ClusterError, self.receiver.resolve, b"/queue/cluster/worker1/a")

    def test_receive_verify_and_claim(self) -> None:
        """A file is written, verified by SHA-256, and claimable once by its path."""
        rel = b"/queue/cluster/worker1/c.zip"
        self.successResultOf(Deferred.fromCoroutine(self.receiver.new_file(rel)))
        self.successResultOf(Deferred.fromCoroutine(self.receiver.update(rel + b" abc")))
        reply = self.successResultOf(Deferred.fromCoroutine(
            self.receiver.end(rel + b" " + hashlib.sha256(b"abc").digest())))
        self.assertEqual(reply, Reply(OK, b"File received correctly"))
        path = self.receiver.claim("queue/cluster/worker1/c.zip")
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"abc")
        self.assertRaises(ClusterError, self.receiver.claim, "queue/cluster/worker1/c.zip")

    def test_only_received_files_can_be_claimed(self) -> None:
        """A …_e command cannot name an arbitrary file."""
        self.assertRaises(ClusterError, self.receiver.claim, "etc/client.keys")

    def test_checksum_mismatch_removes_the_file(self) -> None:
        """A wrong digest is answered with Wazuh's err text and the file is removed."""
        rel = b"/queue/cluster/worker1/c.zip"
        self.successResultOf(Deferred.fromCoroutine(self.receiver.new_file(rel)))
        self.successResultOf(Deferred.fromCoroutine(self.receiver.update(rel + b" abc")))
        reply = self.successResultOf(Deferred.fromCoroutine(
            self.receiver.end(rel + b" " + b"0" * 32)))
        self.assertEqual(reply.command, ERR)
        self.assertFalse(os.path.exists(os.path.join(self.home, "queue/cluster/worker1/c.zip")))

    def test_size_limit(self) -> None:
        """A file growing beyond max_file is refused and removed."""
        rel = b"/queue/cluster/worker1/c.zip"
        self.successResultOf(Deferred.fromCoroutine(self.receiver.new_file(rel)))
        d = Deferred.fromCoroutine(self.receiver.update(rel + b" " + b"x" * 101))
        self.failureResultOf(d, ClusterError)
        self.assertFalse(os.path.exists(os.path.join(self.home, "queue/cluster/worker1/c.zip")))


class FollowedFileTests(SynchronousTestCase):
    """A reader on another thread follows a file while it is received."""

    def setUp(self) -> None:
        self.home = short_tempdir(self)
        os.makedirs(os.path.join(self.home, "queue", "cluster", "worker1"))
        self.receiver = FileReceiver(self.home, SynchronousRunner().run, max_file=1000)
        self.receiver.directory_name = b"worker1"
        self.followed: list[tuple[bytes, FollowedFile]] = []
        self.receiver.follow_next = lambda rel, followed: self.followed.append((rel, followed))

    def call(self, coroutine: object) -> Reply:
        """Run one receiver step (synchronous runner) and return its reply."""
        return self.successResultOf(Deferred.fromCoroutine(coroutine))  # type: ignore[arg-type]

    def read_all(self, followed: FollowedFile) -> tuple[threading.Event, threading.Event,
                                                        list[object]]:
        """Read ``followed`` to its end on a pool thread. Returns (reader open, reader done,
        [sizes of the pieces read..., b"end" or the FollowError])."""
        opened, done = threading.Event(), threading.Event()
        result: list[object] = []

        def run() -> None:
            try:
                with followed.open() as reader:
                    opened.set()
                    while data := reader.read(1 << 20):
                        result.append(len(data))
                    result.append(b"end")
            except FollowError as e:
                result.append(e)
            finally:
                done.set()
        pool = ThreadPool(minthreads=0, maxthreads=1, name="test-reader")
        pool.start()
        self.addCleanup(pool.stop)
        pool.callInThread(run)
        self.assertTrue(opened.wait(10))
        return opened, done, result

    def test_reader_sees_appended_bytes_then_the_end(self) -> None:
        """The next announced file is followed (once); a reader blocked on it gets each
        chunk once it is written and the end once the checksum matched."""
        rel = b"/queue/cluster/worker1/c.zip"
        self.call(self.receiver.new_file(rel))
        self.assertEqual([r for r, _ in self.followed], [rel])
        self.assertIsNone(self.receiver.follow_next)
        _, done, result = self.read_all(self.followed[0][1])
        self.call(self.receiver.update(rel + b" abc"))
        self.call(self.receiver.update(rel + b" defgh"))
        self.call(self.receiver.end(rel + b" " + hashlib.sha256(b"abcdefgh").digest()))
        self.assertTrue(done.wait(10))
        self.assertEqual(result[-1], b"end")
        self.assertEqual(sum(int(size) for size in result[:-1]), 8)  # type: ignore[call-overload]
        self.call(self.receiver.new_file(b"/queue/cluster/worker1/d.zip"))
        self.assertEqual(len(self.followed), 1)  # only the next file is followed

    def test_reader_never_sees_unreported_bytes(self) -> None:
        """Bytes are handed out only up to what was reported written."""
        path = os.path.join(self.home, "queue", "cluster", "worker1", "x")
        with open(path, "wb") as f:
            f.write(b"0123456789")
        followed = FollowedFile(path)
        followed.advance(4)
        with followed.open() as reader:
            self.assertEqual(reader.read(100), b"0123")
            followed.advance(10)
            followed.complete()
            self.assertEqual(reader.read(3), b"456")
            self.assertEqual(reader.read(100), b"789")
            self.assertEqual(reader.read(100), b"")

    def test_failures_wake_the_reader(self) -> None:
        """A checksum mismatch, a write refused for size, a second announcement of the same
        name and a lost connection each end the reader with FollowError."""
        rel = b"/queue/cluster/worker1/c.zip"
        causes = {
            "checksum mismatch": lambda: self.call(self.receiver.end(rel + b" " + b"0" * 32)),
            "too large": lambda: self.failureResultOf(Deferred.fromCoroutine(
                self.receiver.update(rel + b" " + b"x" * 1001)), ClusterError),
            "announced again": lambda: self.call(self.receiver.new_file(rel)),
            "connection lost": self.receiver.close_all,
        }
        for reason, cause in causes.items():
            self.receiver.follow_next = lambda r, f: self.followed.append((r, f))
            self.call(self.receiver.new_file(rel))
            _, done, result = self.read_all(self.followed[-1][1])
            self.call(self.receiver.update(rel + b" abc"))
            cause()
            self.assertTrue(done.wait(10), reason)
            self.assertIsInstance(result[-1], FollowError, reason)
            self.assertEqual(str(result[-1]), reason)
            self.receiver.close_all()

    def test_a_completed_file_cannot_fail_afterwards(self) -> None:
        """Once complete, a late fail() (the push task ending) changes nothing."""
        path = os.path.join(self.home, "queue", "cluster", "worker1", "x")
        open(path, "wb").close()
        followed = FollowedFile(path)
        followed.complete()
        followed.fail("the push ended without it")
        self.assertIsNone(followed.failure)
        with followed.open() as reader:
            self.assertEqual(reader.read(10), b"")


class SenderTests(SynchronousTestCase):
    """send_string and send_file against a receiving protocol."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.home = short_tempdir(self)
        os.makedirs(os.path.join(self.home, "queue", "cluster", "worker1"))
        runner = SynchronousRunner().run
        self.strings = StringStore(self.clock)
        files = FileReceiver(self.home, runner)
        files.directory_name = b"worker1"
        self.files = files
        common = CommonResponders(self.strings, files, lambda: "test")

        class Receiver(RecordingHandler):
            def handle(self, command: bytes, payload: bytes) -> Deferred[object]:
                return Deferred.fromCoroutine(common.responders()[command](payload))

        codec = FernetCodec(VECTOR_KEY)
        self.server, self.client, self.pump = connected_pair(
            lambda: ClusterProtocol(Receiver(), self.clock, codec=codec, runner=runner),
            lambda: ClusterProtocol(RecordingHandler(), self.clock, codec=codec,
                                    runner=runner), self.clock)

    def pumped(self, d: Deferred[object]) -> object:
        """Pump until ``d`` fires; return its result."""
        for _ in range(200):
            if d.called:
                break
            self.pump.flush()
        return self.successResultOf(d)

    def test_long_string_in_several_chunks(self) -> None:
        """A string longer than one chunk arrives whole under the returned id."""
        data = os.urandom(REQUEST_CHUNK + 1000)
        string_id = self.pumped(Deferred.fromCoroutine(send_string(self.client, data)))
        assert isinstance(string_id, bytes)
        self.assertEqual(self.strings.take(string_id), data)

    def test_file_transfer(self) -> None:
        """A multi-chunk file arrives byte-identical."""
        source = os.path.join(self.home, "source.bin")
        data = os.urandom(REQUEST_CHUNK + 12345)
        with open(source, "wb") as f:
            f.write(data)
        rel = b"/queue/cluster/worker1/x.zip"
        self.pumped(Deferred.fromCoroutine(send_file(self.client, source, rel,
                                                     SynchronousRunner().run)))
        with open(self.files.claim("queue/cluster/worker1/x.zip"), "rb") as f:
            self.assertEqual(f.read(), data)


class _DeferredRunner:
    """A runner whose calls run only when the test releases them, in any order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Deferred[object], object, tuple[object, ...]]] = []

    def run(self, f: object, *args: object, **kwargs: object) -> Deferred[object]:
        d: Deferred[object] = Deferred()
        self.calls.append((d, f, args))
        return d

    def release_last_first(self) -> int:
        """Run every pending call, newest first; return how many ran."""
        calls, self.calls = self.calls, []
        for d, f, args in reversed(calls):
            d.callback(f(*args))  # type: ignore[operator]
        return len(calls)


class PipelinedSenderTests(SynchronousTestCase):
    """send_file keeps two file_upd in flight; the receiver still writes them in order."""

    def setUp(self) -> None:
        self.home = short_tempdir(self)
        os.makedirs(os.path.join(self.home, "queue", "cluster", "worker1"))
        self.rel = b"/queue/cluster/worker1/x.zip"

    def test_appends_stay_in_order_when_the_pool_reorders_them(self) -> None:
        """Appends released newest-first are still written in arrival order."""
        runner = _DeferredRunner()
        files = FileReceiver(self.home, runner.run)
        files.directory_name = b"worker1"
        d = Deferred.fromCoroutine(files.new_file(self.rel))
        runner.release_last_first()
        self.successResultOf(d)
        pieces = [b"a" * 10, b"b" * 10, b"c" * 10]
        updates = [Deferred.fromCoroutine(files.update(self.rel + b" " + p)) for p in pieces]
        digest = hashlib.sha256(b"".join(pieces)).digest()
        end = Deferred.fromCoroutine(files.end(self.rel + b" " + digest))
        while runner.release_last_first():
            pass
        for update in updates:
            self.successResultOf(update)
        self.assertEqual(self.successResultOf(end).payload, b"File received correctly")
        with open(files.claim("queue/cluster/worker1/x.zip"), "rb") as f:
            self.assertEqual(f.read(), b"".join(pieces))

    def test_window_of_two(self) -> None:
        """The third chunk is read only once the first reply arrived."""
        source = os.path.join(self.home, "source.bin")
        data = os.urandom(3 * REQUEST_CHUNK)
        with open(source, "wb") as f:
            f.write(data)
        sent: list[tuple[bytes, Deferred[bytes]]] = []

        class Peer:
            def request(self, command: bytes, payload: bytes,
                        timeout: float | None = None) -> Deferred[bytes]:
                d: Deferred[bytes] = Deferred()
                sent.append((command, d))
                return d

        done = Deferred.fromCoroutine(send_file(Peer(), source, self.rel,  # type: ignore[arg-type]
                                                SynchronousRunner().run))
        sent[0][1].callback(b"ok")  # new_file
        self.assertEqual([c for c, _ in sent], [b"new_file", b"file_upd", b"file_upd"])
        sent[1][1].callback(b"ok")
        self.assertEqual([c for c, _ in sent][3:], [b"file_upd"])
        answered = 2
        while sent[-1][0] != b"file_end":
            self.assertLessEqual(len(sent) - answered, 2)  # never more than two in flight
            sent[answered][1].callback(b"ok")
            answered += 1
        self.assertEqual(len(sent), 6)  # new_file, four chunks, file_end
        sent[-1][1].callback(b"File received correctly")
        self.successResultOf(done)

    def test_smaller_chunks(self) -> None:
        """With ``chunk_size``, no file_upd payload is longer, and the content arrives whole."""
        source = os.path.join(self.home, "source.bin")
        data = os.urandom(5 * 1000 + 17)
        with open(source, "wb") as f:
            f.write(data)
        payloads: list[bytes] = []

        class Peer:
            def request(self, command: bytes, payload: bytes,
                        timeout: float | None = None) -> Deferred[bytes]:
                if command == b"file_upd":
                    payloads.append(payload)
                answer = b"File received correctly" if command == b"file_end" else b"ok"
                return Deferred.fromCoroutine(_ok(answer))

        self.successResultOf(Deferred.fromCoroutine(send_file(
            Peer(), source, self.rel, SynchronousRunner().run,  # type: ignore[arg-type]
            chunk_size=1000)))
        self.assertEqual(len(payloads), 6)
        self.assertTrue(all(len(p) <= 1000 for p in payloads))
        self.assertEqual(b"".join(p.partition(b" ")[2] for p in payloads), data)
        self.failureResultOf(Deferred.fromCoroutine(send_file(
            Peer(), source, self.rel, SynchronousRunner().run,  # type: ignore[arg-type]
            chunk_size=len(self.rel) + 1)), ValueError)

    def test_growing_file(self) -> None:
        """Only bytes declared final are sent; the transfer ends when the writer finishes."""
        source = os.path.join(self.home, "growing.bin")
        clock = Clock()
        growing = GrowingFile()
        received = bytearray()
        replies: list[bytes] = []

        class Peer:
            def request(self, command: bytes, payload: bytes,
                        timeout: float | None = None) -> Deferred[bytes]:
                replies.append(command)
                if command == b"file_upd":
                    received.extend(payload.partition(b" ")[2])
                if command == b"file_end":
                    return Deferred.fromCoroutine(_ok(b"File received correctly"))
                return Deferred.fromCoroutine(_ok(b"ok"))

        step = REQUEST_CHUNK - len(self.rel) - 1
        first = os.urandom(step + 100)
        with open(source, "wb") as f:
            f.write(first + b"NOT FINAL YET")
        growing.advance(len(first))
        done = Deferred.fromCoroutine(send_file(
            Peer(), source, self.rel, SynchronousRunner().run,  # type: ignore[arg-type]
            growing=growing, clock=clock))
        self.assertEqual(bytes(received), first[:step])  # a whole chunk was ready
        clock.advance(1)
        self.assertEqual(bytes(received), first[:step])  # the rest waits for more
        with open(source, "r+b") as f:
            f.seek(len(first))
            f.write(b"final")
            f.truncate()
        growing.finish(len(first) + 5)
        clock.advance(1)
        self.successResultOf(done)
        self.assertEqual(bytes(received), first + b"final")
        self.assertEqual(replies[-1], b"file_end")


async def _ok(value: bytes) -> bytes:
    return value


class NodeNameFileTests(SynchronousTestCase):
    """Container names start with the node name, which may use any character Wazuh allows."""

    def test_wazuh_style_container_name_for_an_unusual_node_name(self) -> None:
        """/queue/cluster/<w:1>/<w:1>-<ts>-<hex>.zip resolves; other odd names do not."""
        home = short_tempdir(self)
        receiver = FileReceiver(home, SynchronousRunner().run)
        receiver.directory_name = b"w:1"
        path = receiver.resolve(b"/queue/cluster/w:1/w:1-1714560000.12-3f2ae1.zip")
        self.assertEqual(os.path.basename(path), "w:1-1714560000.12-3f2ae1.zip")
        for bad in (b"/queue/cluster/w:1/x:y.zip", b"/queue/cluster/w:1/w:1-",
                    b"/queue/cluster/w:1/w:1-../a"):
            self.assertRaises(ClusterError, receiver.resolve, bad)
