"""Running a CLI coroutine on the reactor: shared by the console scripts."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from wazuhcluster.errors import RemoteCommandError


def decode_answer(raw: bytes) -> Any:
    """Decode a node's JSON answer; an error object becomes a ClusterError."""
    value = json.loads(raw)
    if isinstance(value, dict) and "__wazuh_exception__" in value:
        raise RemoteCommandError.from_payload(raw)
    return value


def run_cli(run: Callable[[Any, argparse.Namespace], Coroutine[Any, Any, int]],
            args: argparse.Namespace) -> None:
    """Run ``run(reactor, args)`` under ``react``; its result is the exit status."""

    def _main(reactor: Any) -> Deferred[None]:
        async def go() -> None:
            status = await run(reactor, args)
            if status:
                raise SystemExit(status)
        return Deferred.fromCoroutine(go())

    react(_main)
