"""Tests for wazuhcluster.protocol.frames, chunks and crypto against Wazuh 4.7.5 vectors."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import struct

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.support import VECTOR_KEY, manifest, read_vector
from wazuhcluster.protocol.chunks import (
    FRAGMENT_PAYLOAD,
    REQUEST_CHUNK,
    Reassembler,
    encode_message,
    encode_message_parts,
)
from wazuhcluster.protocol.crypto import DecryptionError, FernetCodec, token_length
from wazuhcluster.protocol.frames import (
    Frame,
    FrameDecoder,
    FrameError,
    command_field,
    encode_frame,
    parse_command_field,
)

DET_IV = bytes(range(16))
DET_TIME = 1700000000
BIG = 16 * 1024 * 1024


def det_codec() -> FernetCodec:
    """The codec with the IV and time used for the fernet_det vectors."""
    return FernetCodec(VECTOR_KEY, iv_source=lambda n: DET_IV, time_source=lambda: DET_TIME)


def pattern(n: int) -> bytes:
    """The data generator of the large vectors."""
    block = bytes(i % 251 for i in range(251))
    return (block * (n // 251 + 1))[:n]


def decode_stream(wire: bytes, codec: FernetCodec | None) -> list[tuple[int, bytes, bytes]]:
    """Decode a byte stream into (counter, command, plaintext) messages."""
    decoder = FrameDecoder(max_payload=BIG)
    reassembler = Reassembler()
    out = []
    for frame in decoder.feed(wire):
        message = reassembler.add(frame)
        if message is not None:
            payload = codec.decrypt(message.payload) if codec else message.payload
            out.append((message.counter, message.command, payload))
    return out


class GoldenVectorTests(SynchronousTestCase):
    """Every frame produced by the real Wazuh 4.7.5 code decodes and re-encodes."""

    def test_every_vector_decodes_in_every_variant(self) -> None:
        """All three variants of every frame file decode to the recorded command and data."""
        seen = 0
        for name, vector in manifest()["frames"].items():
            for variant, info in vector["variants"].items():
                if "file" not in info:
                    continue
                codec = None if variant == "plain" else FernetCodec(VECTOR_KEY)
                [(counter, command, data)] = decode_stream(read_vector(info["file"]), codec)
                self.assertEqual(counter, vector["counter"], name)
                self.assertEqual(command, vector["command"].strip().encode(), name)
                self.assertEqual(hashlib.sha256(data).hexdigest(), vector["data_sha256"], name)
                seen += 1
        self.assertEqual(seen, 29)  # every file in frames/

    def test_plain_and_deterministic_variants_reencode_byte_for_byte(self) -> None:
        """Our encoder reproduces the plain and fernet_det streams exactly."""
        for name, vector in manifest()["frames"].items():
            data = (bytes.fromhex(vector["data_hex"]) if "data_hex" in vector
                    else pattern(vector["data_len"]))
            command = vector["command"].encode()
            for variant in ("plain", "fernet_det"):
                info = vector["variants"].get(variant)
                if info is None:
                    continue
                wire = data if variant == "plain" else det_codec().encrypt(data)
                stream = b"".join(encode_message(vector["counter"], command, len(data), wire))
                self.assertEqual(hashlib.sha256(stream).hexdigest(), info["stream_sha256"],
                                 f"{name} {variant}")
                self.assertEqual([len(f) for f in _split_frames(stream)], info["frame_lengths"])

    def test_exact_limit_is_one_frame_larger_than_the_chunk(self) -> None:
        """A 5 MiB plaintext is one frame even though its token is longer than 5 MiB."""
        data = pattern(REQUEST_CHUNK)
        token = det_codec().encrypt(data)
        self.assertEqual(len(token), token_length(REQUEST_CHUNK))
        [frame] = list(encode_message(1235, b"echo", len(data), token))
        self.assertEqual(frame[:20].hex(), "000004d3006aab0c6563686f202d2d2d2d2d2d2d")

    def test_divided_fragments_decrypt_only_when_joined(self) -> None:
        """Each fragment alone is not a valid token; the joined token is."""
        stream = read_vector("frames", "large_divided.fernet_det.bin")
        frames = FrameDecoder(max_payload=BIG).feed(stream)
        self.assertEqual([f.divided for f in frames], [True, False])
        with self.assertRaises(DecryptionError):
            FernetCodec(VECTOR_KEY).decrypt(frames[0].payload)


def _split_frames(stream: bytes) -> list[bytes]:
    out = []
    while stream:
        length = struct.unpack("!I", stream[4:8])[0]
        out.append(stream[:20 + length])
        stream = stream[20 + length:]
    return out


class CommandFieldTests(SynchronousTestCase):
    """The 12-byte command field."""

    def test_padding(self) -> None:
        """Names are followed by one space and dashes; 11-byte names get just the space."""
        self.assertEqual(command_field(b"ok"), b"ok ---------")
        self.assertEqual(command_field(b"syn_i_w_m_p"), b"syn_i_w_m_p ")
        self.assertEqual(command_field(b"str_upd", divided=True), b"str_upd ---d")

    def test_parsing_cuts_at_the_first_space_and_reads_the_flag(self) -> None:
        """Trailing-space names decode to the bare name; the last byte is the flag."""
        self.assertEqual(parse_command_field(b"ok  --------"), (b"ok", False))
        self.assertEqual(parse_command_field(b"syn_i_w_m_p-"), (b"syn_i_w_m_p", False))
        self.assertEqual(parse_command_field(b"syn_i_w_m_pd"), (b"syn_i_w_m_p", True))

    def test_names_longer_than_eleven_bytes_are_refused(self) -> None:
        """A 12-byte name cannot be encoded (it would eat the flag byte)."""
        self.assertRaises(ValueError, command_field, b"x" * 12)

    def test_empty_name_is_a_frame_error(self) -> None:
        """A field starting with a space has no command: the stream is invalid."""
        self.assertRaises(FrameError, parse_command_field, b" -----------")


class DecoderLimitTests(SynchronousTestCase):
    """Limits are enforced from the header, before buffering."""

    def test_oversized_announcement_is_refused_from_the_header_alone(self) -> None:
        """A header announcing 4 GiB raises at once, with only 20 bytes received."""
        decoder = FrameDecoder(max_payload=1024)
        with self.assertRaises(FrameError):
            decoder.feed(struct.pack("!II12s", 1, 0xFFFFFFFF, b"hello ------"))

    def test_header_then_payload_in_two_reads_does_not_desync(self) -> None:
        """A read that ends right after a header keeps the stream in sync."""
        wire = encode_frame(Frame(7, b"echo", b"x" * 40))
        decoder = FrameDecoder()
        self.assertEqual(decoder.feed(wire[:20]), [])
        self.assertEqual(decoder.feed(wire[20:]), [Frame(7, b"echo", b"x" * 40)])

    def test_empty_payload_completes_at_once(self) -> None:
        """A zero-length frame is complete with its header."""
        self.assertEqual(FrameDecoder().feed(encode_frame(Frame(1, b"echo", b""))),
                         [Frame(1, b"echo", b"")])

    def test_too_many_divided_messages_are_refused(self) -> None:
        """Opening more divided messages than allowed is a framing error."""
        reassembler = Reassembler(max_divided=2)
        reassembler.add(Frame(1, b"echo", b"a", divided=True))
        reassembler.add(Frame(2, b"echo", b"a", divided=True))
        with self.assertRaises(FrameError):
            reassembler.add(Frame(3, b"echo", b"a", divided=True))

    def test_reassembly_past_the_maximum_is_refused(self) -> None:
        """A divided message growing past max_message is a framing error."""
        reassembler = Reassembler(max_message=10)
        reassembler.add(Frame(1, b"echo", b"123456", divided=True))
        with self.assertRaises(FrameError):
            reassembler.add(Frame(1, b"echo", b"123456", divided=True))


def messages_strategy() -> st.SearchStrategy[list[tuple[int, bytes, bytes]]]:
    """Lists of (counter, command, payload) with small and divided-size payloads."""
    command = st.sampled_from([b"echo", b"ok", b"err", b"syn_i_w_m_p", b"new_str", b"dapi"])
    return st.lists(st.tuples(st.integers(0, 2**32 - 1), command,
                              st.binary(max_size=300)), max_size=6)


class PropertyTests(SynchronousTestCase):
    """Hypothesis properties of the codec."""

    @given(messages=messages_strategy(), step=st.integers(1, 97))
    def test_any_split_yields_the_same_messages(self, messages: list[tuple[int, bytes, bytes]],
                                                step: int) -> None:
        """However the stream is cut, the decoder returns exactly the encoded messages."""
        codec = FernetCodec(VECTOR_KEY)
        wire = b"".join(b"".join(encode_message(c, cmd, len(p), codec.encrypt(p)))
                        for c, cmd, p in messages)
        decoder = FrameDecoder()
        reassembler = Reassembler()
        out = []
        for start in range(0, len(wire), step):
            for frame in decoder.feed(wire[start:start + step]):
                message = reassembler.add(frame)
                assert message is not None
                out.append((message.counter, message.command, codec.decrypt(message.payload)))
        self.assertEqual(out, messages)

    @given(blob=st.binary(max_size=4096))
    def test_garbage_only_ever_raises_frame_error(self, blob: bytes) -> None:
        """Arbitrary bytes either decode or raise FrameError; nothing else escapes."""
        reassembler = Reassembler(max_message=2048, max_divided=3)
        with contextlib.suppress(FrameError):
            for frame in FrameDecoder(max_payload=1024).feed(blob):
                reassembler.add(frame)

    @given(blob=st.binary(max_size=512))
    def test_garbage_tokens_only_raise_decryption_error(self, blob: bytes) -> None:
        """Arbitrary payloads either decrypt or raise DecryptionError."""
        with contextlib.suppress(DecryptionError):
            FernetCodec(VECTOR_KEY).decrypt(blob)

    def test_divided_split_uses_full_fragments(self) -> None:
        """Every fragment but the last carries exactly 5 242 860 payload bytes."""
        data = b"z" * (REQUEST_CHUNK + 1)
        frames = list(encode_message(9, b"echo", len(data), data))
        self.assertEqual([len(f) - 20 for f in frames], [FRAGMENT_PAYLOAD, len(data) -
                                                         FRAGMENT_PAYLOAD])

    @given(messages=st.lists(st.tuples(st.integers(0, 2**32 - 1),
                                       st.sampled_from([b"echo", b"ok", b"file_upd"]),
                                       st.binary(max_size=600)), max_size=6),
           cuts=st.lists(st.integers(0, 4000), max_size=12))
    def test_pieces_yield_what_their_concatenation_yields(
            self, messages: list[tuple[int, bytes, bytes]], cuts: list[int]) -> None:
        """feed_pieces (the TLS layer's records of one read) = feed of the joined bytes, for
        any cut, also with empty pieces and pieces that hold several frames or frame parts;
        payloads come out as bytes."""
        wire = b"".join(b"".join(encode_message(c, cmd, len(p), p)) for c, cmd, p in messages)
        bounds = sorted({0, len(wire), *(c for c in cuts if c <= len(wire))})
        pieces = [wire[a:b] for a, b in itertools.pairwise(bounds)] + [b""]
        whole = FrameDecoder().feed(wire)
        decoder = FrameDecoder()
        got = []
        for start in range(0, len(pieces), 3):  # several calls, each with a few pieces
            got += decoder.feed_pieces(pieces[start:start + 3])
        self.assertEqual(got, whole)
        self.assertEqual([(f.counter, f.command, f.payload) for f in got], messages)
        self.assertTrue(all(type(f.payload) is bytes for f in got))
        self.assertEqual(decoder.pending_bytes, 0)

    @given(messages=st.lists(st.tuples(st.integers(0, 2**32 - 1),
                                       st.sampled_from([b"echo", b"ok", b"file_upd"]),
                                       st.binary(max_size=3000)), min_size=1, max_size=6),
           cuts=st.lists(st.integers(0, 20000), max_size=12))
    def test_memoryview_pieces_yield_bytes_payloads(
            self, messages: list[tuple[int, bytes, bytes]], cuts: list[int]) -> None:
        """Memoryview pieces (the direct TLS link's reads) give the same frames as bytes,
        with bytes payloads."""
        wire = b"".join(b"".join(encode_message(c, cmd, len(p), p)) for c, cmd, p in messages)
        bounds = sorted({0, len(wire), *(c for c in cuts if c <= len(wire))})
        buffer = bytearray(wire)
        pieces = [memoryview(buffer)[a:b] for a, b in itertools.pairwise(bounds)]
        got = FrameDecoder().feed_pieces(pieces)
        self.assertEqual([(f.counter, f.command, f.payload) for f in got], messages)
        self.assertTrue(all(type(f.payload) is bytes for f in got))

    def test_large_part_of_a_view_is_kept_small_part_copied(self) -> None:
        """Of a memoryview piece, a payload part of at least half the piece is kept as a view
        (no copy); a smaller part is copied, so that it does not pin the whole piece."""
        frame = b"".join(encode_message(1, b"echo", 5000, b"x" * 5000))
        decoder = FrameDecoder()
        decoder.feed_pieces([memoryview(bytearray(frame[:3020]))])  # header + 3 000 bytes
        self.assertIs(type(decoder._pieces[-1]), memoryview)
        frames = decoder.feed_pieces([memoryview(bytearray(frame[3020:]))])
        self.assertEqual(frames[0].payload, b"x" * 5000)
        other = b"".join(encode_message(2, b"echo", 4000, b"y" * 4000))
        decoder = FrameDecoder()
        frames = decoder.feed_pieces([memoryview(bytearray(other + frame[:120]))])
        self.assertEqual(frames[0].payload, b"y" * 4000)
        self.assertIs(type(decoder._pieces[-1]), bytes)  # 100 bytes of a 4 140-byte piece

    def test_pending_bytes_count_the_announced_payload(self) -> None:
        """While a payload arrives, the decoder accounts for its announced size at once."""
        frame = b"".join(encode_message(1, b"echo", 5000, b"x" * 5000))
        decoder = FrameDecoder()
        self.assertEqual(decoder.feed_pieces([frame[:10]]), [])
        self.assertEqual(decoder.pending_bytes, 10)
        self.assertEqual(decoder.feed_pieces([frame[10:30], frame[30:100]]), [])
        self.assertEqual(decoder.pending_bytes, 20 + 5000)
        [done] = decoder.feed_pieces([frame[100:]])
        self.assertEqual(done.payload, b"x" * 5000)
        self.assertEqual(decoder.pending_bytes, 0)

    @given(size=st.sampled_from([0, 1, 1000, REQUEST_CHUNK, REQUEST_CHUNK + 1,
                                 2 * FRAGMENT_PAYLOAD + 7]))
    def test_parts_are_the_frames_cut_in_two(self, size: int) -> None:
        """encode_message_parts yields each frame of encode_message as (header, payload)."""
        data = bytes(range(256)) * (size // 256) + b"q" * (size % 256)
        frames = list(encode_message(3, b"file_upd", len(data), data))
        parts = list(encode_message_parts(3, b"file_upd", len(data), data))
        self.assertEqual([h + bytes(p) for h, p in parts], frames)
        self.assertTrue(all(len(h) == 20 and type(p) is bytes for h, p in parts))

class FernetInteropTests(SynchronousTestCase):
    """Our tokens are cryptography's Fernet tokens, both ways, at every padding length."""

    def test_both_ways_for_every_padding_length(self) -> None:
        """Sizes 0-48 and around 1 MiB: Fernet decrypts ours and we decrypt Fernet's."""
        import base64
        import os

        from cryptography.fernet import Fernet

        fernet = Fernet(base64.urlsafe_b64encode(VECTOR_KEY))
        ours = FernetCodec(VECTOR_KEY)
        for size in (*range(49), *range(65440, 65560, 7), 1 << 20, (1 << 20) + 1,
                     (1 << 20) - 1):
            data = os.urandom(size)
            self.assertEqual(fernet.decrypt(ours.encrypt(data)), data, size)
            self.assertEqual(ours.decrypt(fernet.encrypt(data)), data, size)

    def test_bad_padding_under_a_valid_signature_is_refused(self) -> None:
        """A correctly signed token whose last block is not PKCS7 padding: DecryptionError."""
        import base64
        import hmac as hmac_module

        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        iv = bytes(16)
        for last, before in itertools.product(
                (bytes(16), bytes(15) + b"\x11", bytes(14) + b"\x01\x02"), (16, 70000)):
            encryptor = Cipher(algorithms.AES(VECTOR_KEY[16:]), modes.CBC(iv)).encryptor()
            body = b"\x80" + struct.pack(">Q", 0) + iv + encryptor.update(b"x" * before + last)
            signature = hmac_module.new(VECTOR_KEY[:16], body, "sha256").digest()
            token = base64.urlsafe_b64encode(body + signature)
            with self.assertRaises(DecryptionError):
                FernetCodec(VECTOR_KEY).decrypt(token)


class FastBase64Tests(SynchronousTestCase):
    """The codec's base64url goes through pybase64 (SIMD) and says exactly what the
    standard library's ``binascii`` says."""

    def test_pybase64_is_used(self) -> None:
        """With pybase64 installed (a dependency) the codec uses it both ways."""
        from wazuhcluster.protocol import crypto

        self.assertIs(crypto._b64_encode, crypto._pybase64_encode)
        self.assertIs(crypto._b64_decode, crypto._pybase64_decode)

    @given(data=st.binary(max_size=300))
    def test_same_text_both_ways(self, data: bytes) -> None:
        """Encoding gives the same bytes; decoding gives the data back."""
        from wazuhcluster.protocol import crypto

        text = crypto._pybase64_encode(data)
        self.assertEqual(text, crypto._binascii_encode(data))
        self.assertEqual(crypto._pybase64_decode(text), data)
        self.assertEqual(crypto._binascii_decode(text), data)

    @given(blob=st.binary(max_size=64)
           | st.text("ABCDabcd0189+/-_=\n ", max_size=40).map(str.encode))
    def test_never_accepts_what_binascii_refuses(self, blob: bytes) -> None:
        """Whatever pybase64 accepts, binascii's strict mode accepts with the same bytes
        (pybase64 is the stricter: it also refuses data after the padding)."""
        from wazuhcluster.protocol import crypto

        try:
            fast = crypto._pybase64_decode(blob)
        except (ValueError, TypeError):
            return
        self.assertEqual(crypto._binascii_decode(blob), fast)

    def test_tokens_cross_between_the_two_paths(self) -> None:
        """Tokens made on pybase64 decrypt on binascii and the other way, small and large;
        junk is a DecryptionError on both."""
        from wazuhcluster.protocol import crypto

        codec = FernetCodec(VECTOR_KEY)
        sizes = (0, 15, 16, 1000, 70000, (1 << 20) + 3)
        fast_tokens = [codec.encrypt(pattern(size)) for size in sizes]
        junk = (b"", b"not base64!", b"gAAAAA==x", b"\x00" * 100, fast_tokens[3][:-1])
        for token in junk:
            self.assertRaises(DecryptionError, codec.decrypt, token)
        self.patch(crypto, "_b64_encode", crypto._binascii_encode)
        self.patch(crypto, "_b64_decode", crypto._binascii_decode)
        for size, token in zip(sizes, fast_tokens, strict=True):
            self.assertEqual(codec.decrypt(token), pattern(size))
        slow_tokens = [codec.encrypt(pattern(size)) for size in sizes]
        for token in junk:
            self.assertRaises(DecryptionError, codec.decrypt, token)
        self.patch(crypto, "_b64_encode", crypto._pybase64_encode)
        self.patch(crypto, "_b64_decode", crypto._pybase64_decode)
        for size, token in zip(sizes, slow_tokens, strict=True):
            self.assertEqual(codec.decrypt(token), pattern(size))
