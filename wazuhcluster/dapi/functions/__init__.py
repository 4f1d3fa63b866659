"""Native implementations of the Wazuh framework functions the DAPI can run.

Each module exposes ``FUNCTIONS``: Wazuh's dotted name -> ``async def f(ctx, **f_kwargs)``.
:data:`ALL_FUNCTIONS` gathers them for the registry.
"""

from __future__ import annotations

from typing import Any

from wazuhcluster.dapi.functions import agents, group_files, groups, ruleset

ALL_FUNCTIONS: dict[str, Any] = {**agents.FUNCTIONS, **groups.FUNCTIONS,
                                  **group_files.FUNCTIONS, **ruleset.FUNCTIONS}

__all__ = ["ALL_FUNCTIONS"]
