"""The agent protocol: every message form and every refusal authd 4.7.5 sends."""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.enrolment.messages import (
    EnrolRequest,
    Refused,
    accepted,
    check_group_field,
    encode_request,
    key_hash,
    parse_answer,
    parse_request,
    refused,
    valid_agent_name,
    version_newer,
)


def parse(data: bytes, *, password: str | None = None, use_source_ip: bool = False,
          **kwargs: Any) -> EnrolRequest:
    return parse_request(data, password=password, source_ip="10.1.2.3",
                         use_source_ip=use_source_ip, manager_version="v4.7.5", **kwargs)


class RequestFormTests(SynchronousTestCase):
    """Accepted forms."""

    def test_name_only(self) -> None:
        """A bare request registers with ``any``."""
        self.assertEqual(parse(b"OSSEC A:'agent-1'\n"), EnrolRequest("agent-1", "any"))

    def test_name_only_use_source_ip(self) -> None:
        """``use_source_ip`` registers the source address."""
        self.assertEqual(parse(b"OSSEC A:'agent-1'", use_source_ip=True).ip, "10.1.2.3")

    def test_every_field(self) -> None:
        """V, G, IP and K in that order."""
        hashed = "a" * 40
        request = parse(f"OSSEC A:'web_01.x' V:'v4.7.5' G:'default,web,web' IP:'192.168.1.7'"
                        f" K:'{hashed}'\n".encode())
        self.assertEqual(request, EnrolRequest("web_01.x", "192.168.1.7", ("default", "web"),
                                               "v4.7.5", hashed))

    def test_ip_src_and_cidr(self) -> None:
        """``IP:'src'`` is the source address; a CIDR block is kept."""
        self.assertEqual(parse(b"OSSEC A:'ab' IP:'src'").ip, "10.1.2.3")
        self.assertEqual(parse(b"OSSEC A:'ab' IP:'10.0.0.0/8'").ip, "10.0.0.0/8")
        self.assertEqual(parse(b"OSSEC A:'ab' IP:'::1'").ip, "::1")

    def test_password(self) -> None:
        """The password prefix is checked and removed."""
        request = parse(b"OSSEC PASS: s3cret OSSEC A:'ab'", password="s3cret")
        self.assertEqual(request.name, "ab")

    def test_older_and_equal_versions(self) -> None:
        """Versions up to the manager's are accepted; higher only when allowed."""
        self.assertEqual(parse(b"OSSEC A:'ab' V:'v4.2.0'").version, "v4.2.0")
        self.assertEqual(parse(b"OSSEC A:'ab' V:'v4.8.0'",
                               allow_higher_versions=True).version, "v4.8.0")
        self.assertTrue(version_newer("v4.10.0", "v4.7.5"))
        self.assertFalse(version_newer("v4.7.5", "v4.7.5"))

    def test_encode_round_trip(self) -> None:
        """What the agent side sends parses back to the same request."""
        data = encode_request("ab", password="p", version="v4.7.5", groups="g1,g2",
                              ip="10.0.0.9", key_hash="f" * 40)
        self.assertEqual(parse(data, password="p"),
                         EnrolRequest("ab", "10.0.0.9", ("g1", "g2"), "v4.7.5", "f" * 40))


class RefusalTests(SynchronousTestCase):
    """Each refusal carries authd's message."""

    def refusal(self, data: bytes, **kwargs: Any) -> str:
        with self.assertRaises(Refused) as caught:
            parse(data, **kwargs)
        return str(caught.exception.message)

    def test_password(self) -> None:
        """Missing, wrong, or unterminated password."""
        for data in (b"OSSEC A:'ab'", b"OSSEC PASS: wrong OSSEC A:'ab'",
                     b"OSSEC PASS: s3cretOSSEC A:'ab'", b"OSSEC PASS: s3cret"):
            self.assertEqual(self.refusal(data, password="s3cret"), "Invalid password")

    def test_invalid_request(self) -> None:
        """Not an add request, or an unterminated name."""
        self.assertEqual(self.refusal(b"GET / HTTP/1.0"), "Invalid request for new agent")
        self.assertEqual(self.refusal(b"OSSEC A:'ab"), "Invalid request for new agent")

    def test_invalid_names(self) -> None:
        """Too short, too long, forbidden characters."""
        for name in ("a", "x" * 129, "bad name", "bad/name", "ñame"):
            self.assertEqual(self.refusal(f"OSSEC A:'{name}'".encode()),
                             f"Invalid agent name: {name}")
        self.assertTrue(valid_agent_name("x" * 128))

    def test_unterminated_fields(self) -> None:
        """Each optional field must be closed."""
        self.assertEqual(self.refusal(b"OSSEC A:'ab' V:'v4"), "Unterminated version field")
        self.assertEqual(self.refusal(b"OSSEC A:'ab' G:'web"), "Unterminated group field")
        self.assertEqual(self.refusal(b"OSSEC A:'ab' IP:'10.0.0.1"), "Unterminated IP field")
        self.assertEqual(self.refusal(b"OSSEC A:'ab' IP:'10.0 .0.1'"), "Unterminated IP field")
        self.assertEqual(self.refusal(b"OSSEC A:'ab' K:'abc"), "Unterminated key field")

    def test_higher_version(self) -> None:
        """An agent newer than the manager."""
        self.assertEqual(self.refusal(b"OSSEC A:'ab' V:'v4.8.0'"),
                         "Agent version must be lower or equal to manager version")

    def test_invalid_ip(self) -> None:
        """An IP field that is no address."""
        self.assertEqual(self.refusal(b"OSSEC A:'ab' IP:'300.1.1.1'"), "Invalid IP: 300.1.1.1")

    def test_group_rules(self) -> None:
        """authd's group-name messages."""
        cases = {
            "": "Invalid group name: Empty Group",
            "g" * 256: f"Invalid group name: {'g' * 255}... group is too large",
            "a,b c": "Invalid group name: a,b c... white spaces are not allowed",
            f"a,{'g' * 256}": f"Invalid group name: {'g' * 255}... group is too large",
            "a,,b": "Invalid group name: a,,b... consecutive ',' are not allowed",
            ",": "Invalid group name: ,... characters '\\/:*?\"<>|,' are prohibited",
            "a,": "Invalid group name: a,... cannot start or end with ','",
            "we/b": "Invalid group name: we/b... characters '\\/:*?\"<>|,' are prohibited",
        }
        for group, message in cases.items():
            with self.assertRaises(Refused) as caught:
                check_group_field(group)
            self.assertEqual(caught.exception.message, message, group)
        self.assertEqual(self.refusal(b"OSSEC A:'ab' G:'a,,b'"),
                         "Invalid group name: a,,b... consecutive ',' are not allowed")
        check_group_field("web:1;x_y-z=+!@(),db")


class AnswerTests(SynchronousTestCase):
    """The answers and the agent's reading of them."""

    def test_accepted(self) -> None:
        """``OSSEC K:'id name ip key'``."""
        data = accepted("001", "ab", "any", "k" * 64)
        self.assertEqual(data, b"OSSEC K:'001 ab any " + b"k" * 64 + b"'")
        self.assertEqual(parse_answer(data).agent_id, "001")
        self.assertEqual(parse_answer(data).key, "k" * 64)

    def test_refused(self) -> None:
        """The reason, then authd's second line; the agent reads the reason."""
        data = refused("Duplicate agent name: ab")
        self.assertEqual(data, b"ERROR: Duplicate agent name: abERROR: Unable to add agent")
        self.assertEqual(parse_answer(data).error, "Duplicate agent name: ab")
        self.assertIn("unexpected", parse_answer(b"garbage").error or "")

    def test_key_hash(self) -> None:
        """SHA-1 of id, name and key concatenated."""
        self.assertEqual(key_hash("001", "ab", "k"), hashlib.sha1(b"001abk").hexdigest())
