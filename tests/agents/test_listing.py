"""The answer of an agent listing: the same JSON text as one ``json.dumps``, written by the
encoder a slice at a time (so that no single C call keeps the GIL for a whole big listing)."""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from wazuhcluster.agents import listing
from wazuhcluster.agents.db import AgentSummary
from wazuhcluster.agents.listing import LISTING_SLICE, agent_dict, agents_json


def summaries(count: int) -> list[AgentSummary]:
    return [AgentSummary(i, f"agent-{i}\u00e9", "10.0.0.1" if i % 2 else None,
                         "active" if i % 3 else "never_connected", "w1" if i % 5 else None,
                         1_700_000_000 + i if i % 2 else None, "Wazuh v4.7.5",
                         ("default", "g\"1") if i % 4 else ())
            for i in range(count)]


class _CountingJson:
    """Stands in for the ``json`` module of :mod:`listing`: counts what each ``dumps`` got."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def dumps(self, value: Any, **kwargs: Any) -> str:
        self.sizes.append(len(value))
        return json.dumps(value, **kwargs)


class AgentsJsonTests(SynchronousTestCase):
    def test_same_text_as_one_dumps(self) -> None:
        for count in (0, 1, LISTING_SLICE - 1, LISTING_SLICE, LISTING_SLICE + 1,
                      2 * LISTING_SLICE + 7):
            agents = summaries(count)
            self.assertEqual(agents_json(agents),
                             json.dumps([agent_dict(a) for a in agents]).encode(), count)
            self.assertEqual(json.loads(agents_json(agents)),
                             [agent_dict(a) for a in agents])

    def test_the_encoder_never_gets_more_than_a_slice(self) -> None:
        counting = _CountingJson()
        self.patch(listing, "json", counting)
        agents_json(summaries(2 * LISTING_SLICE + 7))
        self.assertEqual(counting.sizes, [LISTING_SLICE, LISTING_SLICE, 7])
