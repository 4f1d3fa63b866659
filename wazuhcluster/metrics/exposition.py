"""The Prometheus text of a registry, byte for byte what prometheus_client's ``generate_latest``
writes, with less work per scrape: the ``name{labels}`` part of every line is kept from one
scrape to the next (only the values are written again), and so is a whole family's text while
none of its samples changed.

``generate_latest`` writes every line from scratch: sorting and escaping the labels of each
sample is most of its cost, and with the sync-duration histograms of many workers a scrape is
hundreds of lines whose labels never change. Families this module does not know how to write
exactly (a metric or label name outside the classic character set) are left to
``generate_latest``.
"""

from __future__ import annotations

import re
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
#: Samples that the text format moves to a gauge family of their own after the family.
_OM_SUFFIXES = ("_created", "_gsum", "_gcount")
#: Prefixes kept at most; beyond, the cache starts again (label sets come and go).
MAX_KEPT = 50_000


def _label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _doc(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


class _Unusual(Exception):
    """A family for ``generate_latest`` to write."""


class _One(Collector):
    """One family, for ``generate_latest``."""

    def __init__(self, metric: Any) -> None:
        self.metric = metric

    def collect(self) -> Any:
        yield self.metric


class Exposition:
    """Writes the text of ``registry`` on each call; keeps what does not change between
    calls. Safe to call from several threads (it only adds to dicts; the worst race writes
    a line twice)."""

    def __init__(self, registry: Collector) -> None:
        self._registry = registry
        self._prefixes: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
        self._families: dict[str, tuple[tuple[Any, ...], str, Any]] = {}
        #: per family collected child by child: id(part) -> (part, its text, moved lines)
        self._parts: dict[str, dict[int, tuple[tuple[Any, ...], str, dict[str, str]]]] = {}

    def generate(self) -> bytes:
        return "".join(self._family(metric) for metric in self._registry.collect()).encode()

    def _family(self, metric: Any) -> str:
        kept = self._families.get(metric.name)
        if kept is not None and kept[2] is metric:
            # The very family written last time (a collector that knows it did not change
            # gives it again: wazuhcluster.metrics.registry._Kept); families are never
            # changed once collected.
            return kept[1]
        parts = getattr(metric, "parts", None)
        if parts is not None:
            # A family collected child by child (wazuhcluster.metrics.registry._Kept): the
            # text of each child that did not change is the one written last time.
            try:
                text = self._write_parts(metric, parts)
            except _Unusual:
                pass
            else:
                self._families[metric.name] = ((), text, metric)
                return text
        samples = metric.samples
        key = (metric.type, metric.documentation,
               *[(s.name, tuple(s.labels.items()), s.value, s.timestamp) for s in samples])
        if kept is not None and kept[0] == key:
            self._families[metric.name] = (key, kept[1], metric)
            return kept[1]
        text = self._write(metric)
        self._families[metric.name] = (key, text, metric)
        return text

    def _write_parts(self, metric: Any, parts: list[tuple[Any, ...]]) -> str:
        """The family's text from the texts of its parts (the samples of one child each),
        kept by the identity of the part between scrapes."""
        head = self._head(metric)
        kept = self._parts.get(metric.name, {})
        fresh: dict[int, tuple[tuple[Any, ...], str, dict[str, str]]] = {}
        main: list[str] = [head]
        moved: dict[str, list[str]] = {}
        for part in parts:
            known = kept.get(id(part))
            if known is None or known[0] is not part:
                lines, by_suffix = self._sample_lines(metric.name, part)
                known = (part, "".join(lines),
                         {k: "".join(v) for k, v in by_suffix.items()})
            fresh[id(part)] = known
            main.append(known[1])
            for suffix, text in known[2].items():
                moved.setdefault(suffix, []).append(text)
        self._parts[metric.name] = fresh
        doc = _doc(metric.documentation)
        for suffix, texts in sorted(moved.items()):
            main.append(f"# HELP {metric.name}{suffix} {doc}\n"
                        f"# TYPE {metric.name}{suffix} gauge\n")
            main.extend(texts)
        return "".join(main)

    def _head(self, metric: Any) -> str:
        name, kind = metric.name, metric.type
        if not _NAME.match(name):
            raise _Unusual()
        shown = {"counter": name + "_total", "info": name + "_info"}.get(kind, name)
        kind = {"info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram",
                "unknown": "untyped"}.get(kind, kind)
        return f"# HELP {shown} {_doc(metric.documentation)}\n# TYPE {shown} {kind}\n"

    def _sample_lines(self, name: str,
                      samples: Any) -> tuple[list[str], dict[str, list[str]]]:
        """The lines of ``samples``, and those the text format moves after the family."""
        out: list[str] = []
        moved: dict[str, list[str]] = {}
        for s in samples:
            line = self._line(s)
            for suffix in _OM_SUFFIXES:
                if s.name == name + suffix:
                    moved.setdefault(suffix, []).append(line)
                    break
            else:
                out.append(line)
        return out, moved

    def _write(self, metric: Any) -> str:
        try:
            return self._write_text(metric)
        except _Unusual:
            return generate_latest(_One(metric)).decode()  # type: ignore[arg-type]

    def _write_text(self, metric: Any) -> str:
        name = metric.name
        doc = _doc(metric.documentation)
        out = [self._head(metric)]
        lines, moved = self._sample_lines(name, metric.samples)
        out.extend(lines)
        for suffix, more in sorted(moved.items()):
            out.append(f"# HELP {name}{suffix} {doc}\n# TYPE {name}{suffix} gauge\n")
            out.extend(more)
        return "".join(out)

    def _line(self, sample: Any) -> str:
        if sample.exemplar is not None or sample.native_histogram is not None:
            raise _Unusual()
        labels = tuple(sample.labels.items())
        prefix = self._prefixes.get((sample.name, labels))
        if prefix is None:
            if not _NAME.match(sample.name) or any(not _LABEL.match(k) for k, _ in labels):
                raise _Unusual()
            if len(self._prefixes) >= MAX_KEPT:
                self._prefixes.clear()
            inner = ",".join(f'{k}="{_label_value(v)}"' for k, v in sorted(labels))
            prefix = f"{sample.name}{{{inner}}} " if inner else f"{sample.name} "
            self._prefixes[(sample.name, labels)] = prefix
        timestamp = ("" if sample.timestamp is None
                     else f" {int(float(sample.timestamp) * 1000):d}")
        return f"{prefix}{floatToGoString(sample.value)}{timestamp}\n"
