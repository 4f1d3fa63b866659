"""``python -m bench.testbed scale|partition|slowlink|restart|diskfull|all [options]``.

Runs each scenario on a fresh bed (network namespaces when run as root, else 127.0.0.x), writes
``<out>/<scenario>/run.csv`` (everything below in one long table: t_s, node, peer, metric,
value, unit), ``samples.csv`` (RSS and CPU of every node each second), ``tasks.csv`` (every
task duration of every node: integrity check/sync, agent-info, agent-groups, local integrity,
DAPI round trips), ``reactor_lag.csv`` (worst lag of each node per 1 s window), ``events.csv``,
``results.csv`` and, when matplotlib is installed, ``resources.png``; prints a summary table
with pass/fail against the targets. See docs/testbed.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from bench.testbed import scenarios
from bench.testbed.cluster import IDLE_PROBE, BedCluster
from bench.testbed.net import make_bed

SCENARIOS = ("scale", "partition", "slowlink", "restart", "diskfull")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.testbed", description=__doc__)
    parser.add_argument("scenario", choices=(*SCENARIOS, "all"))
    parser.add_argument("--workers", type=int, default=None,
                        help="workers (scale: 100, partition: 3, restart: 20)")
    parser.add_argument("--agents", type=int, default=None,
                        help="agents (scale: 200000, partition: 5000)")
    parser.add_argument("--cut", type=float, default=60.0, help="partition length, seconds")
    parser.add_argument("--list-mb", type=float, default=50.0, help="slowlink: list size")
    parser.add_argument("--rate-kbit", type=float, default=2000.0, help="slowlink: bandwidth")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="slowlink: latency")
    parser.add_argument("--files", type=int, default=2000, help="restart: files to sync")
    parser.add_argument("--disk-mb", type=int, default=64, help="diskfull: worker disk size")
    parser.add_argument("--out", default=None, help="where CSVs and charts go")
    parser.add_argument("--loopback", action="store_true",
                        help="use 127.0.0.x even when namespaces are available")
    parser.add_argument("--keep", action="store_true", help="keep the node homes")
    parser.add_argument("--ext", default=None, metavar="JSON",
                        help="wazuhcluster tunables for every node (cluster.json section "
                             "'wazuhcluster'), e.g. '{\"max_events_per_turn\": 100000}' "
                             "for A/B runs")
    parser.add_argument("--workers-nice", type=int, default=0, metavar="N",
                        help="run the workers at niceness N (a model of workers on hosts of "
                             "their own; the default 0 is the figure the targets are judged on)")
    return parser.parse_args(argv)


async def run_one(reactor: Any, name: str, args: argparse.Namespace,
                  out: str) -> list[scenarios.Result]:
    bed = make_bed(prefer_netns=not args.loopback)
    if bed.kind != "netns":
        print(f"[{name}] network namespaces unavailable: nodes on 127.0.0.x; links cannot be"
              " cut", flush=True)
    base = tempfile.mkdtemp(prefix=f"wzcbed-{name}-", dir="/tmp")
    c = BedCluster(reactor, bed, base,
                   {"wazuhcluster": json.loads(args.ext)} if args.ext else None,
                   workers_nice=args.workers_nice)
    if args.workers_nice:
        print(f"[{name}] workers at niceness {args.workers_nice}: a model of workers on hosts "
              "of their own, not the figure the targets are judged on", flush=True)
    print(f"[{name}] bed {bed.kind}, homes under {base}", flush=True)
    try:
        if name == "scale":
            results = await scenarios.scale(c, args.workers or 100, args.agents or 200_000)
        elif name == "partition":
            results = await scenarios.partition(c, args.workers or 3, args.agents or 5_000,
                                                args.cut)
        elif name == "slowlink":
            results = await scenarios.slowlink(c, args.list_mb, args.rate_kbit,
                                               args.latency_ms)
        elif name == "restart":
            results = await scenarios.restart(c, args.workers or 20, args.files)
        else:
            results = await scenarios.diskfull(c, args.disk_mb)
    except Exception as e:  # noqa: BLE001 -- a failed scenario is a result, not a crash
        results = [(f"{name} did not complete: {e}", 0, "", "completes", False)]
    finally:
        await c.stop_all()
        bed.destroy()
    write_outputs(os.path.join(out, name), c, results)
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return results


def write_outputs(directory: str, c: BedCluster, results: list[scenarios.Result]) -> None:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "samples.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", "node", "rss_kib", "cpu_pct"])
        w.writerows(c.samples)
    with open(os.path.join(directory, "events.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", "node", "event"])
        w.writerows(c.events)
    with open(os.path.join(directory, "results.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["metric", "value", "unit", "target", "passed"])
        w.writerows(results)
    tasks = c.task_rows()
    lag = c.lag_rows()
    with open(os.path.join(directory, "tasks.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", "node", "peer", "task", "seconds"])
        w.writerows(tasks)
    with open(os.path.join(directory, "reactor_lag.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", "node", "worst_lag_ms"])
        w.writerows(lag)
    with open(os.path.join(directory, "run.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", "node", "peer", "metric", "value", "unit"])
        rows: list[tuple[float, str, str, str, float, str]] = []
        for t, node, rss, cpu in c.samples:
            rows.append((round(t, 3), node, "", "rss", rss, "KiB"))
            rows.append((round(t, 3), node, "", "cpu", round(cpu, 1), "%"))
        rows.extend((t, node, "", "reactor lag (worst of 1 s)", worst, "ms")
                    for t, node, worst in lag)
        rows.extend((t, node, peer, task, seconds, "s") for t, node, peer, task, seconds in tasks)
        rows.extend((round(t, 3), node, "", f"event: {what}", 1, "")
                    for t, node, what in c.events)
        w.writerows(sorted(rows))
    chart(directory, c, tasks, lag)


#: task names as the nodes log them, and their colour in the chart
TASK_COLOURS = {"Integrity check": "tab:blue", "Integrity sync": "tab:orange",
                "Agent-info sync": "tab:green", "Agent-groups send": "tab:red",
                "Agent-groups send full": "tab:purple", "Local integrity": "tab:grey",
                "Agent-groups recv": "tab:red", "Agent-groups recv full": "tab:purple",
                "DAPI round trip": "black"}


def chart(directory: str, c: BedCluster, tasks: list[tuple[float, str, str, str, float]],
          lag: list[tuple[float, str, float]]) -> None:
    """resources.png: RSS, CPU and reactor lag of the master and the busiest workers, and
    every task duration on the master and the workers, over time (needs matplotlib)."""
    try:
        import matplotlib  # type: ignore[import-not-found]
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found]
    except ImportError:
        print(f"  (matplotlib not installed: no chart in {directory})")
        return
    fig, (rss_ax, cpu_ax, lag_ax, master_ax, worker_ax) = plt.subplots(
        5, 1, figsize=(10, 13), sharex=True)
    nodes = sorted({n for _, n, _, _ in c.samples})
    worst = sorted((n for n in nodes if n != "master"),
                   key=lambda n: -c.max_rss_mb(n))[:3]
    for name in ["master", *worst]:
        points = [(t, rss / 1024, cpu) for t, n, rss, cpu in c.samples if n == name]
        if not points:
            continue
        ts, rss, cpu = zip(*points, strict=True)
        rss_ax.plot(ts, rss, label=name)
        cpu_ax.plot(ts, cpu, label=name)
    for t, node, what in c.events:
        if what in ("cut", "healed", "noticed w1 gone", "noticed the master gone"):
            rss_ax.axvline(t, color="grey", linestyle=":")
            rss_ax.annotate(f"{node}: {what}", (t, rss_ax.get_ylim()[1]), fontsize=7,
                            rotation=90, va="top")
    together: dict[int, float] = {}
    for t, _, _, pct in c.samples:
        together[round(t)] = together.get(round(t), 0.0) + pct
    if together:
        cpu_ax.plot(sorted(together), [together[k] for k in sorted(together)],
                    color="lightgrey", label="all nodes together")
    cpu_ax.axhline(100 * (os.cpu_count() or 1), color="red", linestyle=":", linewidth=0.8)
    master_lag = [(t, ms) for t, node, ms in lag if node == "master"]
    if master_lag:
        lag_ax.plot(*zip(*master_lag, strict=True), label="master", color="tab:blue")
    idle_lag = [(t, ms) for t, node, ms in lag if node == IDLE_PROBE]
    if idle_lag:
        lag_ax.plot(*zip(*idle_lag, strict=True), color="grey", linewidth=0.8,
                    label="an idle reactor on the same box")
    worker_lag = [(t, ms) for t, node, ms in lag if node not in ("master", IDLE_PROBE)]
    if worker_lag:
        lag_ax.scatter(*zip(*worker_lag, strict=True), s=3, color="tab:orange",
                       label="workers (each polled every ~30 s)")
    lag_ax.axhline(100, color="red", linestyle=":", linewidth=0.8)
    for ax, side in ((master_ax, "master"), (worker_ax, "workers")):
        for task, colour in TASK_COLOURS.items():
            spans = [(t, s) for t, node, _, name, s in tasks if name == task
                     and (node == "master") == (side == "master")]
            if spans:
                ax.scatter(*zip(*spans, strict=True), s=4, color=colour, label=task)
        ax.set_yscale("symlog", linthresh=0.01)
        ax.set_ylim(bottom=0)
        ax.set_ylabel(f"{side}: task (s)")
        ax.legend(loc="upper left", fontsize=7, ncol=2, markerscale=3)
    rss_ax.set_ylabel("RSS (MB)")
    cpu_ax.set_ylabel("CPU (%)")
    lag_ax.set_ylabel("reactor lag (ms)")
    lag_ax.set_yscale("symlog", linthresh=1)
    lag_ax.set_ylim(bottom=0)
    worker_ax.set_xlabel("seconds since the scenario began")
    rss_ax.legend(loc="upper left", fontsize=8)
    cpu_ax.legend(loc="upper left", fontsize=8)
    lag_ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(directory, "resources.png"), dpi=90)
    plt.close(fig)


def summary(all_results: dict[str, list[scenarios.Result]]) -> int:
    print()
    print(f"{'scenario':10} {'metric':58} {'value':>10} {'unit':4} {'target':>10}  result")
    failed = 0
    for name, results in all_results.items():
        for metric, value, unit, target, passed in results:
            verdict = "info" if passed is None else ("PASS" if passed else "FAIL")
            failed += passed is False
            if len(metric) > 58:  # a failure's reason: print it whole
                print(f"{name:10} {metric}")
                metric = ""
            print(f"{name:10} {metric:58} {value:>10} {unit:4} {target:>10}  {verdict}")
    return failed


async def main(reactor: Any, argv: list[str]) -> None:
    args = parse(argv)
    out = args.out or os.path.join("build", "testbed", time.strftime("%Y%m%d-%H%M%S"))
    names = SCENARIOS if args.scenario == "all" else (args.scenario,)
    all_results = {}
    for name in names:
        print(f"[{name}] starting", flush=True)
        all_results[name] = await run_one(reactor, name, args, out)
    failed = summary(all_results)
    print(f"\noutputs in {out}")
    if failed:
        raise SystemExit(1)


def entry() -> None:
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, sys.argv[1:])))


if __name__ == "__main__":
    entry()
