"""The produce-rf1, produce-rf3, latency-rf3 and consume scenarios of bench/run.

Strata is measured with its own perf tools (`strata perf produce|e2e|consume`)
against a `strata dev` cluster started from the release binary, and beside it,
in the same run and with the same record sizes and counts, its peers:

- NATS JetStream (Debian's nats-server): one server (R1) or a 3-server cluster
  (R3) on loopback, file storage, driven by `strata-bench nats-publish`
  (asynchronous publish acks, a window in flight);
- Redis Streams (Debian's redis-server, nothing on disk): pipelined XADD from
  redis-benchmark;

and the machine's limits: fio sequential writes with an fdatasync after every
256 KiB (about one group commit), and loopback TCP with iperf3. Each figure is
the median of --runs runs. The table goes to stderr; the last line on stdout
is one JSON object. Raw outputs stay in the out directory.

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

SCENARIO, STRATA, BENCH, WORK, OUT = sys.argv[1:6]
RUNS, QUICK = int(sys.argv[6]), sys.argv[7] == "1"
PARTITIONS = 12
SIZES = [100, 1024]
# Records per produce run: enough for several seconds at Strata's rates.
RECORDS = {100: 50_000, 1024: 20_000} if QUICK else {100: 1_000_000, 1024: 300_000}
BASE = 19070
BOOT = ["--bootstrap-server", f"127.0.0.1:{BASE}"]


def say(*args):
    print("bench/run:", *args, file=sys.stderr, flush=True)


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise SystemExit(f"no JSON line in output: {text[-500:]}")


def save(name, text):
    with open(os.path.join(OUT, name), "w") as f:
        f.write(text)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


class Strata:
    def __init__(self, nodes):
        self.nodes = nodes
        self.dir = os.path.join(WORK, f"strata-{nodes}")
        self.log = open(os.path.join(OUT, f"strata-{nodes}-nodes.log"), "w")
        self.proc = subprocess.Popen([STRATA, "dev", "--nodes", str(nodes), "--data-dir", self.dir,
                                      "--base-port", str(BASE)], stdout=self.log, stderr=self.log,
                                     env=dict(os.environ, STRATA_LOG="warn"))
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

    def produce(self, size, records, rate=-1, tag=""):
        topic = self.topic()
        r = run([STRATA, "perf", "produce", "--topic", topic, "--num-records", str(records), "--record-size",
                 str(size), "--throughput", str(rate), "--producer-props", "acks=all", "--json", *BOOT])
        save(f"strata-produce-{self.nodes}n-{size}b{tag}.txt", r.stdout + r.stderr)
        if r.returncode != 0:
            raise SystemExit(f"strata perf produce failed: {r.stderr[-500:]}")
        j = last_json(r.stdout)
        lat = j["latency_ms"]
        return {"records_per_s": j["records_per_sec"], "mb_per_s": j["records_per_sec"] * size / 1e6,
                "p50_ms": lat["p50"], "p99_ms": lat["p99"], "p999_ms": lat["p999"], "max_ms": lat["max"],
                "topic": topic}

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class Nats:
    def __init__(self, servers):
        self.servers = servers
        self.procs = []
        routes = ",".join(f"nats-route://127.0.0.1:{16250 + i}" for i in range(servers))
        for i in range(servers):
            conf = os.path.join(WORK, f"nats-{i}.conf")
            store = os.path.join(WORK, f"nats-{i}")
            with open(conf, "w") as f:
                f.write(f'listen: 127.0.0.1:{16222 + i}\nserver_name: n{i}\n'
                        f'jetstream {{ store_dir: "{store}" }}\n')
                if servers > 1:
                    f.write(f'cluster {{ name: bench, listen: 127.0.0.1:{16250 + i}, routes: [{routes}] }}\n')
            log = open(os.path.join(OUT, f"nats-{servers}-{i}.log"), "w")
            self.procs.append(subprocess.Popen(["nats-server", "-c", conf], stdout=log, stderr=log))
        time.sleep(3 if servers > 1 else 1)  # routes formed, JetStream meta leader elected
        self.streams = 0

    def produce(self, size, records):
        self.streams += 1
        stream = f"S{self.streams}"
        for attempt in range(10):
            r = run([BENCH, "nats-publish", "--addr", "127.0.0.1:16222", "--stream", stream, "--replicas",
                     str(self.servers), "--records", str(records), "--record-size", str(size), "--window", "1024"])
            if r.returncode == 0:
                break
            time.sleep(1)  # JetStream still electing its meta leader
        save(f"nats-r{self.servers}-{size}b-{stream}.txt", r.stdout + r.stderr)
        if r.returncode != 0:
            raise SystemExit(f"nats-publish failed: {r.stderr[-500:]}")
        j = last_json(r.stdout)
        return {k: j[k] for k in ["records_per_s", "mb_per_s", "p50_ms", "p99_ms", "p999_ms", "max_ms"]}

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
        return {"records_per_s": rps, "mb_per_s": rps * size / 1e6, "p50_ms": p50, "p99_ms": p99,
                "p999_ms": None, "max_ms": mx}

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


def measure(system, size, fn):
    runs = [fn() for _ in range(RUNS)]
    row = {"system": system, "record_bytes": size, "records": RECORDS[size], "runs": len(runs)}
    for key in ["records_per_s", "mb_per_s", "p50_ms", "p99_ms", "p999_ms", "max_ms"]:
        row[key] = median([r[key] for r in runs])
    row["records_per_s_runs"] = [round(r["records_per_s"]) for r in runs]
    say(f"{system:>18} {size:>5} B: {row['records_per_s']:>12,.0f} records/s  {row['mb_per_s']:8.1f} MB/s")
    return row


def produce_scenario(rf):
    results = []
    lim = limits()
    say(f"limits: fio {lim['fio_mb_per_s'] or 0:.0f} MB/s, loopback {lim['loopback_mb_per_s'] or 0:.0f} MB/s")
    strata = Strata(rf)
    try:
        for size in SIZES:
            results.append(measure("strata", size, lambda: strata.produce(size, RECORDS[size])))
    finally:
        strata.stop()
    nats = Nats(rf)
    try:
        for size in SIZES:
            results.append(measure(f"nats-r{rf}", size, lambda: nats.produce(size, RECORDS[size])))
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
        if system != "strata" and (("strata", size) in by) and row["records_per_s"]:
            ratios[f"strata_over_{system}_{size}b"] = by[("strata", size)]["records_per_s"] / row["records_per_s"]
    for size in SIZES:
        if lim["fio_mb_per_s"]:
            ratios[f"strata_{size}b_mb_over_fio"] = by[("strata", size)]["mb_per_s"] / lim["fio_mb_per_s"]
    return {"results": results, "limits": lim, "ratios": ratios,
            "notes": ["nats-server 2.9.10 (Debian 12) has no sync_interval setting (added in 2.10), so the "
                      "sync-always NATS variant cannot run here; NATS figures use its default (no fsync per ack)"]}


def latency_scenario():
    strata = Strata(3)
    results = []
    try:
        for rate in ([2_000] if QUICK else [10_000, 50_000]):
            records = rate * (3 if QUICK else 20)
            runs = [strata.produce(1024, records, rate, tag=f"-{rate}") for _ in range(RUNS)]
            row = {"system": "strata", "kind": "produce-ack", "record_bytes": 1024, "rate": rate}
            for key in ["records_per_s", "p50_ms", "p99_ms", "p999_ms", "max_ms"]:
                row[key] = median([r[key] for r in runs])
            results.append(row)
            e2e = []
            for i in range(RUNS):
                topic = strata.topic()
                r = run([STRATA, "perf", "e2e", "--topic", topic, "--num-records", str(records), "--record-size",
                         "1024", "--throughput", str(rate), "--json", *BOOT])
                save(f"strata-e2e-{rate}-{i}.txt", r.stdout + r.stderr)
                if r.returncode != 0:
                    raise SystemExit(f"strata perf e2e failed: {r.stderr[-500:]}")
                e2e.append(last_json(r.stdout)["e2e_latency_ms"])
            results.append({"system": "strata", "kind": "end-to-end", "record_bytes": 1024, "rate": rate,
                            "p50_ms": median([e["p50"] for e in e2e]), "p99_ms": median([e["p99"] for e in e2e]),
                            "p999_ms": median([e["p999"] for e in e2e]), "max_ms": median([e["max"] for e in e2e])})
            say(f"rate {rate}/s: produce p99 {row['p99_ms']:.2f} ms, e2e p99 {results[-1]['p99_ms']:.2f} ms")
    finally:
        strata.stop()
    return {"results": results}


def consume_scenario():
    strata = Strata(3)
    results = []
    try:
        total = (64 << 20) if QUICK else (1 << 30)
        for size in SIZES:
            records = total // size
            fill = strata.produce(size, records)
            topic = fill["topic"]
            for phase in ["cold", "warm"]:
                if phase == "cold":
                    subprocess.run(["sync"])
                    try:
                        with open("/proc/sys/vm/drop_caches", "w") as f:
                            f.write("3")
                    except OSError:
                        phase = "cold (page cache not dropped: not root)"
                r = run([STRATA, "perf", "consume", "--topic", topic, "--messages", str(records), "--json", *BOOT])
                save(f"strata-consume-{size}b-{phase.split()[0]}.txt", r.stdout + r.stderr)
                if r.returncode != 0:
                    raise SystemExit(f"strata perf consume failed: {r.stderr[-500:]}")
                j = last_json(r.stdout)
                results.append({"system": "strata", "phase": phase, "record_bytes": size, "records": records,
                                "records_per_s": j["records_per_sec"], "mb_per_s": j["records_per_sec"] * size / 1e6})
                say(f"consume {size} B {phase}: {j['records_per_sec']:,.0f} records/s")
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
