"""Training script of the agent restart benchmark: plain torch, no agent API, so that every agent
runs it as it is (``init_process_group`` from the environment, a gloo all-reduce per step). Each
step appends ``{"event": "step", "pid", "rank", "gen", "time"}`` to ``<ctl>/events.jsonl``, ``gen``
being the restart count the agent gave the process (JOB_RESTART_COUNT, else
TORCHELASTIC_RESTART_COUNT)."""

import argparse
import datetime as dt
import json
import os
import time

import torch
import torch.distributed as dist

parser = argparse.ArgumentParser()
parser.add_argument("--ctl", required=True)
parser.add_argument("--step-time", type=float, default=0.01)
args = parser.parse_args()

gen = int(os.environ.get("JOB_RESTART_COUNT") or os.environ.get("TORCHELASTIC_RESTART_COUNT") or 0)
dist.init_process_group("gloo", timeout=dt.timedelta(seconds=60))
rank = dist.get_rank()
path = os.path.join(args.ctl, "events.jsonl")
while True:
    t = torch.tensor([1.0])
    dist.all_reduce(t)
    with open(path, "a") as f:
        f.write(
            json.dumps({"event": "step", "pid": os.getpid(), "rank": rank, "gen": gen, "time": time.time()})
        )
        f.write("\n")
    time.sleep(args.step_time)
