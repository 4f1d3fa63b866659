"""The test bed's scenarios: each builds a cluster on the bed, measures, and returns results.

A result is ``(metric, value, unit, target, passed)``; ``passed`` is None for information only.
Targets are the ones the scale-and-faults issue sets (docs/testbed.md).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

from bench.testbed.cluster import (
    IDLE_PROBE,
    BedCluster,
    Node,
    file_digest,
    write_client_keys,
)

Result = tuple[str, float, str, str, bool | None]
#: cluster.json overrides of every bed run: production intervals, except a faster integrity
#: check cadence so that convergence is not a matter of waiting for the next 9 s tick.
BED_TUNABLES: dict[str, Any] = {}


def _le(metric: str, value: float, unit: str, limit: float) -> Result:
    return (metric, round(value, 3), unit, f"< {limit:g}", value < limit)


def _info(metric: str, value: float, unit: str) -> Result:
    return (metric, round(value, 3), unit, "", None)


async def start_cluster(c: BedCluster, workers: list[str], timeout: float = 120.0) -> float:
    """Start the master, then every worker; seconds until the master lists them all."""
    master = c.add("master", "master")
    c.start(master)
    await c.wait("the master's local socket", lambda: c.node_names(master), 60.0)
    for name in workers:
        c.add(name, "worker")
    t = time.monotonic()
    for name in workers:
        c.start(c.nodes[name])
    expected = {"master", *workers}

    async def all_joined() -> bool:
        return await c.node_names(master) == expected
    await c.wait(f"{len(workers)} workers to join", all_joined, timeout, poll=0.5)
    return time.monotonic() - t


async def wait_agents(c: BedCluster, node: Node, count: int, timeout: float) -> float:
    """Seconds until ``node``'s agent database holds ``count`` agents (000 excluded)."""
    async def complete() -> bool:
        try:
            counts = await c.agent_counts(node)
        except Exception:  # noqa: BLE001 -- not ready yet
            return False
        return counts["total"] >= count
    return await c.wait(f"{node.name} to hold {count} agents", complete, timeout, poll=1.0)


async def propagate_rule(c: BedCluster, workers: list[str], index: int,
                         timeout: float = 60.0) -> float:
    """Change a rule file on the master; seconds until every worker has the new content."""
    master = c.nodes["master"]
    relative = os.path.join("etc", "rules", "bed_rules.xml")
    content = f'<group name="bed{index}"><rule id="{100000 + index}" level="3"/></group>\n'
    path = os.path.join(master.home, relative)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(content)
    t = time.monotonic()
    os.replace(tmp, path)
    digest = file_digest(path)

    def everywhere() -> bool:
        return all(file_digest(os.path.join(c.nodes[w].home, relative)) == digest
                   for w in workers)
    await c.wait("the rule file on every worker", everywhere, timeout, poll=0.01)
    return time.monotonic() - t


# -- scale --------------------------------------------------------------------------------
async def scale(c: BedCluster, workers: int, agents: int) -> list[Result]:
    """1 master + N workers, A agents: joins, agent DBs, rule push, keepalives, RSS, errors.

    A phase that misses its deadline is reported as failed and the later phases are skipped;
    RSS and ERROR lines are reported in every case.
    """
    names = [f"w{i}" for i in range(1, workers + 1)]
    c.bed.create(["master", *names])
    c.start_sampling()
    results: list[Result] = []
    try:
        await _scale_phases(c, names, agents, results)
    except TimeoutError as e:
        results.append((str(e), 0, "", "completes", False))
    await c.ask_status([n for n in c.nodes.values() if n.running])  # worst lag so far
    c.read_idle_probe()
    results.append(_le("master RSS, max", c.max_rss_mb("master"), "MB", 300))
    worst = max((c.max_rss_mb(n) for n in names), default=0.0)
    results.append(_info("largest worker RSS, max", worst, "MB"))
    accepted = sum(1 for line in c.nodes["master"].log_lines() if "[Main] Connected from" in line)
    results.append(_info(f"worker connections accepted by the master (for {workers} workers)",
                         accepted, ""))
    results.extend(lag_and_cpu(c, names))
    results.extend(task_summary(c))
    errors = c.error_lines()
    count = sum(len(lines) for lines in errors.values())
    results.append(("ERROR lines in every cluster.log", count, "", "= 0", count == 0))
    kinds: dict[str, int] = {}
    for lines in errors.values():
        for line in lines:
            kind = re.sub(r"\[Worker [^]]+\] ", "", line.split(": ", 1)[-1])[:70]
            kinds[kind] = kinds.get(kind, 0) + 1
    for kind, n in sorted(kinds.items(), key=lambda kv: -kv[1])[:5]:
        results.append(_info(f"  {n} x {kind}", n, ""))
    return results


async def _scale_phases(c: BedCluster, names: list[str], agents: int,
                        results: list[Result]) -> None:
    workers = len(names)
    joined = await start_cluster(c, names, timeout=max(120.0, workers * 3.0))
    results.append(_le(f"all {workers} workers joined", joined, "s", 30))
    master = c.nodes["master"]
    t = time.monotonic()
    ids = write_client_keys(os.path.join(master.home, "etc", "client.keys"), agents)
    await wait_agents(c, master, agents, 300.0)
    for name in names:  # 600 s in all (5 x the target), not per worker
        await wait_agents(c, c.nodes[name], agents, max(1.0, 600 - (time.monotonic() - t)))
    results.append(_le("every worker's agent database complete", time.monotonic() - t, "s",
                       120))
    times = sorted([await propagate_rule(c, names, i) for i in range(10)])
    results.append(_le("rule change on all workers, p50 of 10", times[len(times) // 2], "s", 1))
    results.append(_info("rule change on all workers, max of 10", times[-1], "s"))
    t = time.monotonic()
    share = {name: ids[i::workers] for i, name in enumerate(names)}
    for name in names:
        await c.keepalive(c.nodes[name], share[name])

    async def all_active() -> bool:  # the ids are all the agents there are
        try:
            return (await c.agent_counts(master))["active"] >= len(ids)
        except Exception:  # noqa: BLE001 -- a busy master's DAPI timeout: ask again
            return False
    await c.wait(f"{agents} agents active on the master", all_active, 300.0, poll=2.0)
    results.append(_le(f"{agents} keepalives seen active on the master",
                       time.monotonic() - t, "s", 20))
    listed = await c.agents(master)
    owner = {i: name for name, ids_ in share.items() for i in ids_}
    wrong = sum(1 for a in listed if a["id"] != "000" and owner.get(int(a["id"])) != a["node_name"])
    results.append(("agents with the wrong node_name on the master", wrong, "", "= 0",
                    wrong == 0))


def lag_and_cpu(c: BedCluster, workers: list[str]) -> list[Result]:
    """Worst reactor lag of the master (target) and workers; where the CPU went."""
    results: list[Result] = []
    if "master" in c.lag_worst:
        results.append(_le("worst reactor lag on the master", c.lag_worst["master"], "ms", 100))
        windows = sorted(c.lag.get("master", {}).values())
        if windows:
            results.append(_info("  master lag, p99 of 1 s windows",
                                 windows[min(len(windows) - 1, int(len(windows) * 0.99))],
                                 "ms"))
    else:
        results.append(("worst reactor lag on the master: no status answer", 0, "ms",
                        "< 100", False))
    if IDLE_PROBE in c.lag_worst:
        windows = sorted(c.lag.get(IDLE_PROBE, {}).values())
        results.append(_info("  idle reactor lag on the same box, worst", c.lag_worst[
            IDLE_PROBE], "ms"))
        if windows:
            results.append(_info("  idle reactor lag, p99 of 1 s windows",
                                 windows[min(len(windows) - 1, int(len(windows) * 0.99))],
                                 "ms"))
    seen = [c.lag_worst[w] for w in workers if w in c.lag_worst]
    if seen:
        results.append(_info("worst reactor lag on any worker", max(seen), "ms"))
    cpu: dict[str, float] = {}
    for _, node, _, pct in c.samples:
        cpu[node] = cpu.get(node, 0.0) + pct / 100.0  # one sample a second: CPU seconds
    span = max((t for t, _, _, _ in c.samples), default=0.0)
    if span:
        total = sum(cpu.values())
        results.append(_info("CPU seconds, master", cpu.get("master", 0.0), "s"))
        results.append(_info(f"CPU seconds, all {len(cpu)} nodes", total, "s"))
        results.append(_info(f"CPU seconds available ({os.cpu_count()} cores x {span:.0f} s)",
                             (os.cpu_count() or 1) * span, "s"))
    return results


def task_summary(c: BedCluster) -> list[Result]:
    """Median and max of each task's durations on the master and on the workers."""
    by: dict[tuple[str, str], list[float]] = {}
    for _, node, _, task, seconds in c.task_rows():
        side = "master" if node == "master" else "workers"
        by.setdefault((side, task), []).append(seconds)
    results: list[Result] = []
    for (side, task), values in sorted(by.items()):
        values.sort()
        results.append(_info(f"  {side} {task}: {len(values)} x, median",
                             values[len(values) // 2], "s"))
        results.append(_info(f"  {side} {task}: max", values[-1], "s"))
    return results


# -- partition ----------------------------------------------------------------------------
_WORKER_LOST = re.compile(r"Disconnected from master|Error sending keepalive|Keep ?[Aa]live\]"
                          r".*(closing|disconnect)|connection to the master.*lost")


async def partition(c: BedCluster, workers: int, agents: int, cut: float) -> list[Result]:
    """A worker silently cut off for ``cut`` seconds: detection on both sides, rejoin, no loss."""
    if c.bed.kind != "netns":
        return [("partition", 0, "", "needs network namespaces (run as root)", None)]
    names = [f"w{i}" for i in range(1, workers + 1)]
    c.bed.create(["master", *names])
    c.start_sampling()
    await start_cluster(c, names)
    master, victim = c.nodes["master"], c.nodes["w1"]
    ids = write_client_keys(os.path.join(master.home, "etc", "client.keys"), agents)
    await wait_agents(c, victim, agents, 120.0)
    mine = ids[::workers]
    await c.keepalive(victim, mine)
    results: list[Result] = []
    log_offset = len(victim.log_lines())
    c.bed.cut("w1")
    c.event("w1", "cut")
    t = time.monotonic()
    master_seen = worker_seen = None
    recorded_during_cut = False
    while time.monotonic() - t < cut:
        elapsed = time.monotonic() - t
        if master_seen is None:
            listed = await c.node_names(master)
            if listed is not None and "w1" not in listed:
                master_seen = elapsed
                c.event("master", "noticed w1 gone")
        if worker_seen is None and any(_WORKER_LOST.search(line)
                                       for line in victim.log_lines()[log_offset:]):
            worker_seen = elapsed
            c.event("w1", "noticed the master gone")
        if not recorded_during_cut and elapsed > cut / 2:
            await c.keepalive(victim, mine, version="Wazuh v4.7.6")  # during the cut
            recorded_during_cut = True
        await c.sleep(0.2)
    results.append(_le("master noticed the cut worker", master_seen or cut, "s", 10))
    results.append(_le("worker noticed the lost master", worker_seen or cut, "s", 10))
    c.bed.heal("w1")
    c.event("w1", "healed")
    t = time.monotonic()

    async def rejoined() -> bool:
        listed = await c.node_names(master)
        return listed is not None and "w1" in listed
    back = await c.wait("w1 to rejoin", rejoined, 60.0, poll=0.1)
    results.append(_le("rejoined after the link came back", back, "s", 3))

    async def synced() -> bool:
        listed = await c.agents(master, "w1")
        versions = {a["id"]: a.get("version") for a in listed}
        return all(versions.get(f"{i:03d}") == "Wazuh v4.7.6" for i in mine)
    try:
        await c.wait("keepalives recorded during the cut on the master", synced, 60.0, poll=1.0)
        lost = 0
    except TimeoutError:
        rows = await c.agents(master, "w1")
        versions = {a["id"]: a.get("version") for a in rows}
        lost = sum(1 for i in mine if versions.get(f"{i:03d}") != "Wazuh v4.7.6")
    results.append(("agent updates made during the cut lost on the master", lost, "", "= 0",
                    lost == 0))
    loops = sum(1 for line in master.log_lines() if "3028" in line)
    results.append(("Error 3028 lines on the master", loops, "", "<= 1", loops <= 1))
    return results


# -- slow link ----------------------------------------------------------------------------
async def slowlink(c: BedCluster, list_mb: float, rate_kbit: float,
                   latency_ms: float) -> list[Result]:
    """A worker behind a shaped link receives a big CDB list; a fast worker is not slowed."""
    c.bed.create(["master", "fast", "slow"])
    c.start_sampling()
    master = c.add("master", "master")
    c.start(master)
    await c.wait("the master's local socket", lambda: c.node_names(master), 60.0)
    proxy_port = 1517
    fast = c.add("fast", "worker")
    # the slow worker dials a proxy on its own address, which relays to the master
    slow = c.add("slow", "worker", master_address=c.bed.address("slow"), port=proxy_port)
    proxy_log = open(os.path.join(c.base, "proxy.out"), "ab")  # noqa: SIM115
    proxy = subprocess.Popen(  # our own proxy, inside the slow node's namespace
        [*c.bed.prefix("slow"), sys.executable, "-m", "bench.testbed.proxy",
         "--listen", f"{c.bed.address('slow')}:{proxy_port}",
         "--to", f"{c.bed.address('master')}:{c.port}",
         "--latency-ms", str(latency_ms), "--rate-kbit", str(rate_kbit)],
        stdout=proxy_log, stderr=proxy_log,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    results: list[Result] = []
    try:
        c.start(fast)
        c.start(slow)

        async def both() -> bool:
            return await c.node_names(master) == {"master", "fast", "slow"}
        await c.wait("both workers to join", both, 60.0)
        path = os.path.join(master.home, "etc", "lists", "bed-big-list")
        rng = random.Random(7)
        with open(path + ".tmp", "w", encoding="ascii") as f:
            written = 0
            while written < list_mb * 1024 * 1024:
                line = f"{rng.getrandbits(64):016x}:{rng.choice(['malicious', 'benign'])}\n"
                f.write(line)
                written += len(line)
        t = time.monotonic()
        os.replace(path + ".tmp", path)
        digest = file_digest(path)
        relative = os.path.join("etc", "lists", "bed-big-list")
        fast_time = await c.wait("the list on the fast worker",
                                 lambda: file_digest(os.path.join(fast.home, relative)) == digest,
                                 600.0, poll=0.2)
        results.append(_info("big list on the fast worker", fast_time, "s"))
        slow_time = await c.wait("the list on the slow worker",
                                 lambda: file_digest(os.path.join(slow.home, relative)) == digest,
                                 1800.0, poll=1.0)
        results.append(_info(f"big list ({list_mb:g} MB) on the slow worker "
                             f"({rate_kbit:g} kbit/s, {latency_ms:g} ms)", slow_time, "s"))
        slow_t = time.monotonic() - t
        dropped = sum(1 for line in master.log_lines()
                      if "[Worker slow]" in line and "disconnected" in line.lower())
        results.append(("slow worker disconnected during the transfer", dropped, "", "= 0",
                        dropped == 0))
        results.append(("slow worker converged", slow_t, "s", "converges", True))
    finally:
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(10)
        proxy_log.close()
    return results


# -- master restart -----------------------------------------------------------------------
async def restart(c: BedCluster, workers: int, files: int) -> list[Result]:
    """The master restarted while its workers sync; all reconnect and converge."""
    names = [f"w{i}" for i in range(1, workers + 1)]
    c.bed.create(["master", *names])
    c.start_sampling()
    await start_cluster(c, names)
    master = c.nodes["master"]
    shared = os.path.join(master.home, "etc", "shared", "default")
    for i in range(files):
        with open(os.path.join(shared, f"bed-{i}.conf"), "w", encoding="ascii") as f:
            f.write(f"# file {i}\n" + "x" * 4000 + "\n")
    await c.sleep(1.0)  # let the syncs start
    t = time.monotonic()
    await c.stop(master)
    c.start(master)
    expected = {"master", *names}

    async def all_back() -> bool:
        return await c.node_names(master) == expected
    back = await c.wait("every worker back after the restart", all_back, 120.0)
    results: list[Result] = [_info("all workers reconnected after the master restart", back,
                                   "s")]
    want = {f"bed-{i}.conf": file_digest(os.path.join(shared, f"bed-{i}.conf"))
            for i in range(files)}

    def converged() -> bool:
        for name in names:
            directory = os.path.join(c.nodes[name].home, "etc", "shared", "default")
            for file_name, digest in want.items():
                if file_digest(os.path.join(directory, file_name)) != digest:
                    return False
        return True
    await c.wait("every worker to converge", converged, 300.0, poll=1.0)
    results.append(_info("all workers converged after the restart", time.monotonic() - t, "s"))
    leftovers = [os.path.join(root, f) for name in names
                 for root, _, fs in os.walk(os.path.join(c.nodes[name].home, "etc"))
                 for f in fs if f.endswith((".tmp", ".part")) or f.startswith(".wzc")]
    results.append(("half-written files left in etc/", len(leftovers), "", "= 0",
                     not leftovers))
    return results


# -- disk full ----------------------------------------------------------------------------
async def diskfull(c: BedCluster, size_mb: int) -> list[Result]:
    """A worker whose disk fills during a sync keeps its files, says so once, and converges."""
    if os.geteuid() != 0:
        return [("diskfull", 0, "", "needs root (a small tmpfs for the worker)", None)]
    c.bed.create(["master", "w1"])
    c.start_sampling()
    master = c.add("master", "master")
    c.start(master)
    await c.wait("the master's local socket", lambda: c.node_names(master), 60.0)
    home = os.path.join(c.base, "w1")
    os.makedirs(home, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", home],
                   check=True)
    results: list[Result] = []
    try:
        worker = c.add("w1", "worker")
        # the logs stay off the small disk, so that what the worker says about it is kept
        logs = os.path.join(c.base, "w1-logs")
        os.makedirs(logs, exist_ok=True)
        shutil.rmtree(os.path.join(worker.home, "logs"))
        os.symlink(logs, os.path.join(worker.home, "logs"))
        c.start(worker)

        async def joined() -> bool:
            return await c.node_names(master) == {"master", "w1"}
        await c.wait("w1 to join", joined, 60.0)
        rules = os.path.join(worker.home, "etc", "rules", "local_rules.xml")
        with open(os.path.join(master.home, "etc", "rules", "local_rules.xml"), "w") as f:
            f.write("<group name='before'/>\n")
        await c.wait("the first rule file on w1", lambda: os.path.exists(rules), 60.0)
        before = file_digest(rules)
        filler = os.path.join(home, "filler")
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True,
                       check=False)  # fills the tmpfs
        big = os.path.join(master.home, "etc", "lists", "bed-incompressible")
        with open(big, "wb") as blob:
            # received container + staged copy + the final file must fit once space is back
            blob.write(os.urandom(size_mb * 1024 * 1024 // 8))
        with open(os.path.join(master.home, "etc", "rules", "local_rules.xml"), "w") as f:
            f.write("<group name='after'/>\n")
        offset = len(worker.log_lines())
        await c.sleep(20.0)
        full_lines = [line for line in worker.log_lines()[offset:]
                      if "No space" in line or "ENOSPC" in line or "space" in line.lower()]
        results.append(("old rule file intact while the disk is full",
                        float(file_digest(rules) == before), "", "= 1",
                        file_digest(rules) == before))
        results.append(("disk-full lines on the worker in 20 s", len(full_lines), "", "few",
                        0 < len(full_lines) <= 5))
        os.unlink(filler)
        t = time.monotonic()
        want = file_digest(big)
        try:
            await c.wait("w1 to converge once space is freed",
                         lambda: file_digest(os.path.join(worker.home, "etc", "lists",
                                                          "bed-incompressible")) == want,
                         180.0, poll=1.0)
            results.append(("converged by itself after space was freed",
                            round(time.monotonic() - t, 3), "s", "converges", True))
        except TimeoutError:
            results.append(("converged by itself after space was freed", 180.0, "s",
                            "converges", False))
    finally:
        await c.stop(c.nodes["w1"])
        subprocess.run(["umount", "-l", home], check=False)
        shutil.rmtree(home, ignore_errors=True)
    return results
