"""Training script for the graceful-stop tests: a gloo all-reduce loop that stops cleanly on the
agent's elastic-event signal (``/stop {"is_graceful": true}`` sends SIGUSR1).

Each step asks ``elastic_event_detected()``; with ``HYPERPOD_SIGNAL_COORDINATION=distributed`` the
answer is all-reduced, so every rank of the job stops at the same step, also the ranks of a pod
that got no signal. On stopping it appends ``{"event": "elastic_stop", "rank", "step",
"signalled"}`` to ``<ctl>/events.jsonl`` (``signalled``: this process got the signal itself) and
exits 0.
"""

import argparse
import datetime as dt
import json
import os
import time

import torch
import torch.distributed as dist

from hyperpod_agent import worker
from hyperpod_agent.worker import InProcessRestart, elastic_event_detected, install_elastic_event_handler

parser = argparse.ArgumentParser()
parser.add_argument("--ctl", required=True)
parser.add_argument("--step-time", type=float, default=0.05)
args = parser.parse_args()

install_elastic_event_handler()
events_path = os.path.join(args.ctl, "events.jsonl")


def record(event, **fields):
    line = json.dumps({"event": event, "pid": os.getpid(), "time": time.time(), **fields})
    with open(events_path, "a") as f:
        f.write(line + "\n")


ipr = InProcessRestart()
ipr.init_process_group("gloo", timeout=dt.timedelta(seconds=60))
rank = dist.get_rank()
step = 0
while True:
    t = torch.tensor([1.0])
    dist.all_reduce(t)
    record("step", rank=rank, step=step)
    if elastic_event_detected():
        record("elastic_stop", rank=rank, step=step, signalled=worker._elastic_event.is_set())
        break
    step += 1
    time.sleep(args.step_time)
dist.destroy_process_group()
