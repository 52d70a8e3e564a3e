"""Helpers shared by bench/run's Python scenarios (peers.py, cost.py)."""

import json
import subprocess
import sys


def say(*args):
    print("bench/run:", *args, file=sys.stderr, flush=True)


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


def last_json(text):
    """The last line of `text` that is a JSON object."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise SystemExit(f"no JSON line in output: {text[-500:]}")
