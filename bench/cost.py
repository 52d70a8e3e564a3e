"""The `cost` scenario of bench/run: instructions per produce and fetch
request, and per record in the clients.

Wall-clock figures on a 2-vCPU virtual machine move by 10-30% from one hour
to the next, so a change that saves 5% of a request's CPU cannot be seen in
them, and this machine has no hardware counters (`perf stat -e instructions`
is not supported). Valgrind's callgrind counts the instructions a process
executes, one by one, and that count hardly depends on the machine's mood.

The scenario starts real `strata server` processes under
`valgrind --tool=callgrind --instr-atstart=no` (a 1-node cluster and a 3-node
one, a 1-partition topic with RF 1 or 3), warms them up uninstrumented, then
for each figure switches counting on in every node (`callgrind_control -i
on`), runs `strata perf produce` (itself not under valgrind), dumps and
switches counting off:

- `single`: 2,000 records of 1 KB, unlimited rate, `batch.size=1000` (one
  record fills a batch), `linger.ms=0`, one request in flight: one record
  per request, the latency setting's shape;
- `batch`: 20,000 records of 1 KB, unlimited rate, `batch.size=102400`,
  one request in flight: about 100 records (100 KB) per request;
- `fetch`: `strata perf consume` reading the first 20,000 records (1 KB)
  from the beginning, already stored: instructions per fetch request (the
  leader's `strata_requests_total{rpc="fetch"}`), with `records_per_request`
  how many records a fetch carried on average;
- `client-produce` and `client-consume` (one node only): the clients
  themselves under callgrind, the server not counted: `strata perf produce`
  of 200,000 records of 100 B with Kafka's producer defaults (`acks=all`,
  16 KiB batches, `linger.ms=5`) into a topic of their own, then `strata
  perf consume` of those records from the beginning. Each is run again
  for one record, and that run's count (the process's start, its
  connection and metadata) is subtracted: instructions per record;
- `idle`: 10 s with nothing sent: what the nodes run on their own
  (heartbeats, timers, metrics); the least of the runs' idle windows is
  subtracted from the other figures in proportion to their duration.

Each produce figure gives instructions per produce request (the leader's
`strata_requests_total{rpc="produce"}` counts them) on the leader, on each
follower, and in all; and the leader's instructions in a few parts of the
code, inclusive of what they call (so they overlap). Only user space is
counted: the kernel's share (system calls, copies into the page cache and
sockets) is not in these figures. Under valgrind a node runs 20-50x slower,
so the figures are about instructions, never about time.

Usage (bench/run calls it): cost.py STRATA_BIN WORK OUT RUNS QUICK
"""

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

from benchutil import last_json, run, say

STRATA, WORK, OUT = sys.argv[1:4]
RUNS, QUICK = int(sys.argv[4]), sys.argv[5] == "1"
BASE = 19300
TOPIC = "cost"
SINGLE_RECORDS = 300 if QUICK else 2000
BATCH_RECORDS = 4000 if QUICK else 20000
FETCH_RECORDS = 4000 if QUICK else 20000
IDLE_SECONDS = 3 if QUICK else 10
CLIENT_TOPIC = "cost-client"
CLIENT_RECORDS = 20000 if QUICK else 200000

# The leader's code, in parts (inclusive Ir; a regex on callgrind_annotate's
# function names, the largest matching line taken).
PARTS = [
    ("produce_rpc", r"strata_broker::server::Api as strata_proto::api::strata_server::Strata>::produce::"),
    ("fetch_rpc", r"strata_broker::server::Api as strata_proto::api::strata_server::Strata>::fetch::"),
    ("raft_core", r"openraft::core::raft_core::RaftCore<C,NF,LS,SM>::runtime_loop::"),
    ("raft_metrics", r"openraft::core::raft_core::RaftCore<C,NF,LS,SM>::flush_metrics"),
    ("log_append", r"strata_log::log::Log::append"),
    ("h2_connection", r"h2::server::Connection<T,B>::poll_accept"),
    ("tracing_span_new", r"tracing::span::Span::(new|make_with) "),
    ("tracing_span_close", r"tracing_core::dispatcher::Dispatch::try_close "),
    ("peer_appends", r"strata_raft::network::client::"),
]
SELF_PARTS = [
    ("malloc_free", r"malloc\.c:|arena\.c:"),
    ("memcpy", r"memmove-vec-unaligned-erms\.S:"),
]


class Cluster:
    """`nodes` servers under callgrind, counting switched off."""

    def __init__(self, nodes):
        self.nodes = nodes
        self.dir = os.path.join(WORK, f"cost-{nodes}")
        os.makedirs(self.dir, exist_ok=True)
        peers = ",".join(f"{i}=127.0.0.1:{self.port(i, 1)}" for i in range(1, nodes + 1))
        self.procs = {}
        for i in range(1, nodes + 1):
            log = open(os.path.join(OUT, f"server-{nodes}n-{i}.log"), "w")
            cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                   f"--callgrind-out-file={OUT}/callgrind-{nodes}n-node{i}.%p",
                   STRATA, "server", "--node-id", str(i), "--peers", peers,
                   "--data-dir", os.path.join(self.dir, f"node-{i}"),
                   "--listen-client", f"127.0.0.1:{self.port(i, 0)}",
                   "--listen-peer", f"127.0.0.1:{self.port(i, 1)}",
                   "--listen-http", f"127.0.0.1:{self.port(i, 2)}",
                   # One runtime thread, as `strata dev` gives each node; Raft
                   # timing loose enough for nodes slowed 50x while counted.
                   "--set", "runtime.worker_threads=1",
                   "--set", "raft.heartbeat_interval=250ms",
                   "--set", "raft.election_timeout_min=5s",
                   "--set", "raft.election_timeout_max=10s"]
            self.procs[i] = subprocess.Popen(cmd, stdout=log, stderr=log)
        self.boot = ["--bootstrap-server", f"127.0.0.1:{self.port(1, 0)}"]
        try:
            self.setup()
        except BaseException:
            self.stop()  # no server left running under valgrind
            raise

    def setup(self):
        nodes = self.nodes
        deadline = time.time() + 120
        while run([STRATA, "cluster", *self.boot]).returncode != 0:
            if time.time() > deadline or any(p.poll() is not None for p in self.procs.values()):
                raise SystemExit(f"the cluster under valgrind did not come up; see the logs in {OUT}")
            time.sleep(1)
        r = run([STRATA, "topic", "create", TOPIC, "--partitions", "1", "--replication-factor", str(nodes),
                 *self.boot])
        if r.returncode != 0:
            raise SystemExit(f"create topic: {r.stderr}")
        self.leader = None
        deadline = time.time() + 60
        while self.leader is None:
            self.leader = self.current_leader()
            if self.leader is None:
                if time.time() > deadline:
                    raise SystemExit("the cost topic has no leader after 60 s")
                time.sleep(1)

    def current_leader(self):
        m = re.search(r"Leader: (\d+)", run([STRATA, "topic", "describe", TOPIC, *self.boot]).stdout)
        return int(m.group(1)) if m and m.group(1) != "-1" else None

    @staticmethod
    def port(node, kind):
        return BASE + 10 * node + kind

    def produce(self, records, rate, props):
        r = run([STRATA, "perf", "produce", "--topic", TOPIC, "--num-records", str(records), "--record-size",
                 "1024", "--throughput", str(rate), "--producer-props", "acks=all",
                 "max.in.flight.requests.per.connection=1", *props, "--json", *self.boot])
        if r.returncode != 0:
            raise SystemExit(f"strata perf produce failed: {r.stderr[-500:]}")
        return last_json(r.stdout)

    def consume(self, records):
        r = run([STRATA, "perf", "consume", "--topic", TOPIC, "--messages", str(records), "--json", *self.boot])
        if r.returncode != 0:
            raise SystemExit(f"strata perf consume failed: {r.stderr[-500:]}")
        return last_json(r.stdout)

    def requests(self, rpc):
        """Requests of kind `rpc` the leader answered so far."""
        text = run(["curl", "-s", f"127.0.0.1:{self.port(self.leader, 2)}/metrics"]).stdout
        m = re.search(rf'^strata_requests_total\{{rpc="{rpc}",code="ok"\}} (\d+)', text, re.M)
        return int(m.group(1)) if m else 0

    def control(self, *args):
        for p in self.procs.values():
            r = run(["callgrind_control", *args, str(p.pid)])
            if r.returncode != 0:
                raise SystemExit(f"callgrind_control {' '.join(args)} {p.pid}: {r.stdout} {r.stderr}")

    def counted(self, label, work):
        """Runs `work` with counting on in every node; returns (seconds,
        {node: dump file}, what `work` returned)."""
        before = {i: set(os.listdir(OUT)) for i in self.procs}
        self.control("--zero")
        self.control("-i", "on")
        start = time.time()
        result = work()
        seconds = time.time() - start
        self.control(f"--dump={label}")
        self.control("-i", "off")
        dumps = {}
        for i, p in self.procs.items():
            prefix = f"callgrind-{self.nodes}n-node{i}.{p.pid}."
            new = [f for f in os.listdir(OUT) if f.startswith(prefix) and f not in before[i]]
            if len(new) != 1:
                raise SystemExit(f"expected one new dump of node {i}, found {new}")
            final = os.path.join(OUT, f"callgrind-{self.nodes}n-node{i}-{label}.out")
            os.replace(os.path.join(OUT, new[0]), final)
            dumps[i] = final
        return seconds, dumps, result

    def stop(self):
        for p in self.procs.values():
            p.send_signal(signal.SIGINT)
        for p in self.procs.values():
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def annotate(path, inclusive):
    args = ["callgrind_annotate", "--auto=no", "--threshold=100", path]
    if inclusive:
        args.insert(1, "--inclusive=yes")
    r = run(args)
    if r.returncode != 0:
        raise SystemExit(f"callgrind_annotate {path}: {r.stderr[-300:]}")
    rows = []
    for line in r.stdout.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S.*)", line)
        if m:
            rows.append((int(m.group(1).replace(",", "")), m.group(2)))
    return rows


def total(rows):
    return next(n for n, name in rows if name.startswith("PROGRAM TOTALS"))


def parts(path):
    inclusive, own = annotate(path, True), annotate(path, False)
    out = {}
    for name, pattern in PARTS:
        out[name] = max((n for n, f in inclusive if re.search(pattern, f)), default=0)
    for name, pattern in SELF_PARTS:
        out[name] = sum(n for n, f in own if re.search(pattern, f))
    return out


def figure(cluster, label, work, rpc="produce"):
    requests0 = cluster.requests(rpc)
    seconds, dumps, result = cluster.counted(label, work)
    requests = cluster.requests(rpc) - requests0
    if cluster.current_leader() != cluster.leader:
        # The counts would be split between two leaders' dumps.
        raise SystemExit(f"{label}: the leader moved during the figure (a Raft election); run it again")
    return seconds, dumps, requests, result


def client_count(label, args, records, r):
    """Instructions of one `strata` client command under callgrind."""
    out = os.path.join(OUT, f"callgrind-{label}-{records}-{r}.out")
    res = run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", STRATA, *args])
    if res.returncode != 0:
        raise SystemExit(f"{label} under callgrind failed: {res.stderr[-500:]}")
    return total(annotate(out, False))


def measure_clients(cluster):
    """The clients' own instructions per record (see the module's
    overview), `RUNS` times."""
    r = run([STRATA, "topic", "create", CLIENT_TOPIC, "--partitions", "1", "--replication-factor", "1",
             *cluster.boot])
    if r.returncode != 0:
        raise SystemExit(f"create topic: {r.stderr}")
    commands = {
        "client-produce": lambda n: ["perf", "produce", "--topic", CLIENT_TOPIC, "--num-records", str(n),
                                     "--record-size", "100", "--throughput", "-1", "--producer-props",
                                     "acks=all", *cluster.boot],
        "client-consume": lambda n: ["perf", "consume", "--topic", CLIENT_TOPIC, "--messages", str(n),
                                     *cluster.boot],
    }
    rows = []
    for r in range(RUNS):
        for label, command in commands.items():
            whole = client_count(label, command(CLIENT_RECORDS), CLIENT_RECORDS, r)
            start = client_count(label, command(1), 1, r)
            per_record = (whole - start) / (CLIENT_RECORDS - 1)
            rows.append({"nodes": 1, "figure": label, "run": r, "records": CLIENT_RECORDS,
                         "ir_total": whole, "ir_start": start, "ir_per_record": per_record})
            say(f"{label} run {r + 1}/{RUNS}: {per_record:,.0f} Ir/record "
                f"({whole:,} for {CLIENT_RECORDS:,} records, {start:,} for one)")
    return rows


def measure(nodes):
    say(f"{nodes} node(s) under callgrind: starting")
    cluster = Cluster(nodes)
    results = []
    try:
        say(f"leader of {TOPIC}/0: node {cluster.leader}; warming up (uninstrumented)")
        cluster.produce(2000 if QUICK else 10000, 1000, ["linger.ms=0", "batch.size=1048576"])
        cluster.produce(BATCH_RECORDS, -1, ["batch.size=102400", "linger.ms=5"])
        # What the warm-up leaves behind (the last applies, the tail cache's
        # release, timers) ran into the first idle window: 4.7x the idle
        # figure of the windows after it.
        time.sleep(5)
        raw = []
        for r in range(RUNS):
            seconds, dumps, _, _ = figure(cluster, f"idle{r}", lambda: time.sleep(IDLE_SECONDS))
            raw.append(("idle", r, seconds, {i: total(annotate(d, False)) for i, d in dumps.items()}, None, None))
            for label, records, rate, props in [
                ("single", SINGLE_RECORDS, -1, ["linger.ms=0", "batch.size=1000"]),
                ("batch", BATCH_RECORDS, -1, ["batch.size=102400", "linger.ms=5"]),
            ]:
                seconds, dumps, requests, perf = figure(
                    cluster, f"{label}{r}", lambda: cluster.produce(records, rate, props))
                if requests <= 0:
                    raise SystemExit(f"{label}: the leader counted no produce request")
                totals = {i: total(annotate(d, False)) for i, d in dumps.items()}
                raw.append((label, r, seconds, totals, (requests, records, perf.get("batches")),
                            parts(dumps[cluster.leader])))
                say(f"{nodes}n {label} run {r + 1}/{RUNS}: {requests} requests, "
                    f"leader {totals[cluster.leader] / requests:,.0f} Ir/request before the idle share")
            # A consumer reading what is stored from the start (the log's
            # mapped segments and tail cache; page cache warm).
            seconds, dumps, requests, perf = figure(
                cluster, f"fetch{r}", lambda: cluster.consume(FETCH_RECORDS), rpc="fetch")
            if requests <= 0:
                raise SystemExit("fetch: the leader counted no fetch request")
            totals = {i: total(annotate(d, False)) for i, d in dumps.items()}
            raw.append(("fetch", r, seconds, totals, (requests, FETCH_RECORDS, None), parts(dumps[cluster.leader])))
            say(f"{nodes}n fetch run {r + 1}/{RUNS}: {requests} fetch requests, "
                f"leader {totals[cluster.leader] / requests:,.0f} Ir/request before the idle share")
        # What a node runs on its own, per second: the least of the idle
        # windows. Work left over from what came before (the warm-up's last
        # applies and releases, a timer's pass) lands in some windows and
        # not others (3-5x the idle figure of the quiet ones); none is ever
        # missing from a window.
        idle = {i: min(t[i] / s for kind, _, s, t, _, _ in raw if kind == "idle") for i in cluster.procs}
        for label, r, seconds, totals, counts, leader_parts in raw:
            if label == "idle":
                continue
            requests, records, batches = counts
            row = {"nodes": nodes, "figure": label, "run": r, "requests": requests, "records": records,
                   "batches": batches, "seconds": round(seconds, 2)}
            net = {i: totals[i] - idle[i] * seconds for i in totals}
            row["leader_ir_per_request"] = net[cluster.leader] / requests
            followers = [net[i] for i in net if i != cluster.leader]
            if followers:
                row["follower_ir_per_request"] = statistics.mean(followers) / requests
            row["all_ir_per_request"] = sum(net.values()) / requests
            row["idle_ir_per_s_leader"] = idle[cluster.leader]
            row["leader_parts_per_request"] = {k: v / requests for k, v in leader_parts.items()}
            results.append(row)
        if nodes == 1:
            results += measure_clients(cluster)
    finally:
        cluster.stop()
    return results


def main():
    rows = measure(1) + measure(3)
    summary = []
    for nodes in (1, 3):
        for label in ("single", "batch", "fetch"):
            mine = [r for r in rows if r["nodes"] == nodes and r["figure"] == label]
            s = {"nodes": nodes, "figure": label, "runs": len(mine),
                 "requests": statistics.median(r["requests"] for r in mine),
                 "records_per_request": statistics.median(r["records"] / r["requests"] for r in mine)}
            for key in ("leader_ir_per_request", "follower_ir_per_request", "all_ir_per_request"):
                values = [r[key] for r in mine if key in r]
                if values:
                    s[key] = round(statistics.median(values))
                    s[key + "_spread"] = round((max(values) - min(values)) / statistics.median(values), 4)
            s["leader_parts_per_request"] = {
                k: round(statistics.median(r["leader_parts_per_request"][k] for r in mine))
                for k in mine[0]["leader_parts_per_request"]}
            summary.append(s)
    print("", file=sys.stderr)
    print(f"{'cluster':<8} {'figure':<7} {'rec/req':>8} {'leader Ir/req':>14} {'follower':>12} {'all nodes':>12}"
          f" {'spread':>7}", file=sys.stderr)
    for s in summary:
        print(f"{s['nodes']}n{'':<6} {s['figure']:<7} {s['records_per_request']:>8.1f}"
              f" {s['leader_ir_per_request']:>14,} {s.get('follower_ir_per_request', 0):>12,}"
              f" {s['all_ir_per_request']:>12,} {100 * s['leader_ir_per_request_spread']:>6.1f}%", file=sys.stderr)
    clients = []
    for label in ("client-produce", "client-consume"):
        values = [r["ir_per_record"] for r in rows if r["figure"] == label]
        clients.append({"figure": label, "runs": len(values), "record_bytes": 100, "records": CLIENT_RECORDS,
                        "ir_per_record": round(statistics.median(values)),
                        "ir_per_record_spread": round((max(values) - min(values)) / statistics.median(values), 4)})
    print("", file=sys.stderr)
    for c in clients:
        print(f"{c['figure']:<15} {c['ir_per_record']:>8,} Ir/record (100 B records, spread "
              f"{100 * c['ir_per_record_spread']:.1f}%)", file=sys.stderr)
    summary += clients
    print("", file=sys.stderr)
    print("leader's parts, inclusive Ir per request (overlapping):", file=sys.stderr)
    for s in summary:
        if "leader_parts_per_request" not in s:
            continue
        print(f"  {s['nodes']}n {s['figure']:<7} " + ", ".join(f"{k} {v:,}" for k, v in
                                                              s["leader_parts_per_request"].items()), file=sys.stderr)
    machine = json.load(open(os.path.join(OUT, "machine.json")))
    source = json.load(open(os.path.join(OUT, "source.json")))
    print(json.dumps({"scenario": "cost", "results": summary, "runs": rows, "machine": machine, "source": source,
                      "valgrind": run(["valgrind", "--version"]).stdout.strip()}))


main()
