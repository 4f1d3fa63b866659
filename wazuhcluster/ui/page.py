"""HTML of the status page, rendered on the server: readable without JavaScript (there is
none), the chart an inline SVG, every string from a peer escaped."""

from __future__ import annotations

import datetime
from html import escape
from typing import Any

#: The page reloads itself (meta refresh) this often, in seconds.
REFRESH_SECONDS = 10
KINDS = (("integrity_check", "Integrity check", "#1f77b4"),
         ("integrity_sync", "Integrity sync", "#d62728"),
         ("agent_info", "Agent-info sync", "#2ca02c"))
STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;margin:.4em 0}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:.9em}
th{background:#f2f2f2}td.n{text-align:right}
.ok{color:#1a7f37}.bad{color:#b42318}.muted{color:#777}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.8em}
form.inline{display:inline}
"""


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _when(seconds: float | None) -> str:
    if not seconds:
        return "n/a"
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime(
        "%Y-%m-%d %H:%M:%S UTC")


def _head(title: str, nonce: str, refresh: bool) -> str:
    meta = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if refresh else ""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">{meta}'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{_e(title)}</title><style nonce=\"{_e(nonce)}\">{STYLE}</style></head>")


def login_page(csrf: str, nonce: str, message: str = "") -> str:
    """The login form (API users); ``csrf`` is also in the ``wzc_csrf`` cookie."""
    note = f'<p class="bad" id="login-error">{_e(message)}</p>' if message else ""
    return (_head("wazuhcluster: log in", nonce, refresh=False)
            + '<body><h1>wazuhcluster status</h1>'
            + "<p>Log in with a REST API user (scripts may send "
              "<code>Authorization: Bearer &lt;token&gt;</code> instead).</p>" + note
            + '<form method="post" action="/ui/login" id="login">'
              f'<input type="hidden" name="csrf" value="{_e(csrf)}">'
              '<p><label>User <input name="username" autocomplete="username" required>'
              '</label></p><p><label>Password <input name="password" type="password" '
              'autocomplete="current-password" required></label></p>'
              '<p><button type="submit">Log in</button></p></form></body></html>')


#: The points of the chart are drawn relative to an origin that moves in steps of this many
#: seconds (the group they are in is shifted to "now" instead), so that a point's SVG text
#: stays the same from one page to the next and is kept with its sync (``fragment``).
ORIGIN_STEP = 600.0


def chart(syncs: list[dict[str, Any]], now: float, span: float, width: int = 900,
          height: int = 260) -> str:
    """Sync durations over the last ``span`` seconds, one colour per kind, as inline SVG.

    Each worker's syncs of one kind are one ``<path>`` (a line through its points, a dot on
    every point from the kind's ``<marker>``, and a ``<title>`` naming the worker, the
    number of syncs, the last and the slowest): some 12 bytes a sync, where a ``<circle>``
    with its own title took some 130 (2 000 syncs: a 268 kB page, most of it the chart,
    received and sent over TLS every 10 s by an open page).

    Each point is drawn at ``x`` relative to ``origin`` (``now`` rounded down to
    ``ORIGIN_STEP``) in a group translated by where ``origin`` falls on the time axis; its
    text then depends only on the sync, ``origin`` and the y scale, and a sync that can keep
    it (a :class:`~wazuhcluster.ui.history.SyncView`) keeps it with that key: a page draws
    again only the points of new syncs, or all of them when the scale or the origin moved.
    """
    left, right, top, bottom = 60, 10, 10, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    shown = [s for s in syncs if s["ok"] and s["ended"] >= now - span]
    peak = max([s["duration"] for s in shown] + [0.001])
    scale = _nice(peak)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" id="sync-chart" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="Sync durations over the last hour"><defs>']
    for index, (_, _, colour) in enumerate(KINDS):
        out.append(f'<marker id="dot{index}" viewBox="0 0 6 6" refX="3" refY="3" '
                   'markerWidth="6" markerHeight="6" markerUnits="userSpaceOnUse">'
                   f'<circle cx="3" cy="3" r="2.5" fill="{colour}"/></marker>')
    out.append(f'</defs><rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" '
               'fill="#fafafa" stroke="#ccc"/>')
    for i in range(5):
        value = scale * i / 4
        y = top + plot_h - plot_h * i / 4
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
                   'stroke="#e5e5e5"/>')
        out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
                   f"{_seconds(value)}</text>")
    for minutes in range(0, int(span // 60) + 1, 10):
        x = left + plot_w - plot_w * minutes * 60 / span
        label, anchor = ("now", "end") if minutes == 0 else (f"-{minutes} min", "middle")
        out.append(f'<text x="{x:.1f}" y="{height - 10}" font-size="10" '
                   f'text-anchor="{anchor}">{label}</text>')
    origin = now - now % ORIGIN_STEP
    shift = left + plot_w - plot_w * (now - origin) / span
    key = (origin, scale, span, plot_w, plot_h, top)
    series: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for s in shown:
        series.setdefault((_KIND_INDEX.get(s["kind"], -1), str(s["worker"])), []).append(s)
    out.append(f'<g transform="translate({shift:.2f} 0)" fill="none" stroke-width="1.2" '
               'stroke-linejoin="round">')
    for (index, worker), points in sorted(series.items()):
        if index < 0:
            continue
        _, label, colour = KINDS[index]
        texts = []
        for s in points:
            kept = getattr(s, "fragment", None)
            if kept is not None and kept[0] == key:
                texts.append(kept[1])
                continue
            x = plot_w * (s["ended"] - origin) / span
            y = top + plot_h - plot_h * min(s["duration"], scale) / scale
            point = f" {x:.1f} {y:.1f}"
            if hasattr(s, "fragment"):
                s.fragment = (key, point)
            texts.append(point)
        slowest = max(s["duration"] for s in points)
        # The first point twice: a line of one sync still has a segment to put a dot on.
        out.append(f'<path class="series" data-kind="{_e(KINDS[index][0])}" '
                   f'data-worker="{_e(worker)}" stroke="{colour}" '
                   f'marker-start="url(#dot{index})" marker-mid="url(#dot{index})" '
                   f'marker-end="url(#dot{index})" d="M{texts[0]}{"".join(texts)}">'
                   f"<title>{_e(label)} {_e(worker)}: {len(points)} syncs, last "
                   f"{_seconds(points[-1]['duration'])} at {_e(_when(points[-1]['ended']))}, "
                   f"slowest {_seconds(slowest)}</title></path>")
    out.append("</g>")
    legend_x = left + 8
    for kind, label, colour in KINDS:
        count = sum(1 for s in shown if s["kind"] == kind)
        out.append(f'<circle cx="{legend_x}" cy="{top + 10}" r="4" fill="{colour}"/>'
                   f'<text x="{legend_x + 8}" y="{top + 14}" font-size="11">{_e(label)} '
                   f"({count})</text>")
        legend_x += 170
    out.append("</svg>")
    return "".join(out)


_KIND_INDEX = {kind: index for index, (kind, _, _) in enumerate(KINDS)}


def _nice(peak: float) -> float:
    for step in (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500):
        if peak <= step:
            return float(step)
    return float(peak)


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _last(syncs: list[dict[str, Any]], worker: str, kind: str) -> dict[str, Any] | None:
    for s in reversed(syncs):
        if s["worker"] == worker and s["kind"] == kind and s["ok"]:
            found: dict[str, Any] = s
            return found
    return None


def status_page(data: dict[str, Any], user: str, csrf: str, nonce: str,
                cookie_session: bool) -> str:
    """The whole page for ``data`` (the ``wazuhcluster.ui.get_status`` answer)."""
    now = float(data["now"])
    syncs: list[dict[str, Any]] = data["syncs"]
    nodes: list[dict[str, Any]] = data["nodes"]
    workers = [n for n in nodes if n["type"] == "worker"]
    parts = [_head(f"wazuhcluster: {data['cluster']}", nonce, refresh=True), "<body>",
             f"<h1>Cluster <span id=\"cluster-name\">{_e(data['cluster'])}</span></h1>",
             f'<p class="muted">Answered by {_e(data["node"])} at {_e(_when(now))}; this '
             f"page reloads every {REFRESH_SECONDS} s. Logged in as {_e(user)}.</p>"]
    if cookie_session:
        parts.append('<form class="inline" method="post" action="/ui/logout">'
                     f'<input type="hidden" name="csrf" value="{_e(csrf)}">'
                     '<button type="submit">Log out</button></form>')
    parts.append(f'<h2>Nodes (<span id="node-count">{len(nodes)}</span>)</h2>'
                 '<table id="nodes"><tr><th>Name</th><th>Type</th><th>Version</th>'
                 "<th>Address</th><th>Connected since</th><th>Last keepalive</th>"
                 "<th>Active agents</th></tr>")
    for n in nodes:
        master = n["type"] == "master"
        parts.append(f'<tr class="node" data-node="{_e(n["name"])}"><td>{_e(n["name"])}</td>'
                     f'<td>{_e(n["type"])}</td><td>{_e(n["version"])}</td><td>{_e(n["ip"])}'
                     f'</td><td>{"-" if master else _e(n["connected_since"])}</td>'
                     f'<td>{"-" if master else _e(n["last_keep_alive"])}</td>'
                     f'<td class="n">{int(n["active_agents"])}</td></tr>')
    parts.append("</table>")
    parts.append("<h2>Last syncs per worker</h2>")
    if not workers:
        parts.append('<p class="muted">No worker is connected.</p>')
    else:
        parts.append('<table id="syncs"><tr><th>Worker</th><th>Integrity check</th>'
                     "<th>Integrity sync</th><th>Created</th><th>Updated</th><th>Deleted</th>"
                     "<th>Agent-info sync</th><th>Agent rows</th></tr>")
        for w in workers:
            name = w["name"]
            check = _last(syncs, name, "integrity_check")
            sync = _last(syncs, name, "integrity_sync")
            info = _last(syncs, name, "agent_info")
            files = w["last_sync_integrity"]
            counts = sync["counts"] if sync else {"created": files["created"],
                                                  "updated": files["updated"],
                                                  "deleted": files["deleted"]}
            parts.append(
                f'<tr class="worker-sync" data-worker="{_e(name)}"><td>{_e(name)}</td>'
                f"<td>{_cell(check, w['last_check_integrity']['end'])}</td>"
                f"<td>{_cell(sync, files['end'])}</td>"
                f'<td class="n">{int(counts.get("created", 0))}</td>'
                f'<td class="n">{int(counts.get("updated", 0))}</td>'
                f'<td class="n">{int(counts.get("deleted", 0))}</td>'
                f"<td>{_cell(info, w['last_sync_agentinfo']['end'])}</td>"
                f'<td class="n">{int(info["counts"].get("rows", 0)) if info else 0}</td></tr>')
        parts.append("</table>")
    parts.append("<h2>Agents by status</h2>")
    statuses = sorted({s for per in data["agents"].values() for s in per})
    total = sum(sum(per.values()) for per in data["agents"].values())
    parts.append(f'<p>Total: <span id="agent-total">{total}</span></p>'
                 '<table id="agents"><tr><th>Node</th>'
                 + "".join(f"<th>{_e(s)}</th>" for s in statuses) + "</tr>")
    for node_name in sorted(data["agents"]):
        per = data["agents"][node_name]
        parts.append(f'<tr class="agents" data-node="{_e(node_name)}"><td>{_e(node_name)}</td>'
                     + "".join(f'<td class="n" data-status="{_e(s)}">{int(per.get(s, 0))}</td>'
                               for s in statuses) + "</tr>")
    parts.append("</table>")
    span = float(data.get("history_seconds") or 3600)
    parts.append(f"<h2>Sync durations, last {span / 60:.0f} minutes</h2>"
                 + chart(syncs, now, span))
    parts.append("<h2>Last errors and warnings in cluster.log of "
                 f"{_e(data['node'])}</h2>")
    if data["log"]:
        parts.append('<pre id="log">' + "\n".join(_e(line) for line in data["log"]) + "</pre>")
    else:
        parts.append('<p class="muted" id="log">None in the end of the log.</p>')
    parts.append("</body></html>")
    return "".join(parts)


def _cell(record: dict[str, Any] | None, fallback: str) -> str:
    if record is None:
        return f'<span class="muted">{_e(fallback)}</span>'
    return (f"{_e(_when(record['ended']))}<br><span class=\"ok\">"
            f"{_seconds(record['duration'])}</span>")
