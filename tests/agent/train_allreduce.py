"""Training script for the agent tests and the restart benchmark: a real gloo all-reduce loop.

Faults are injected through files in the control directory (--ctl), so a test decides when:
``fault_rank<R>`` containing ``raise`` (an exception in the training step), ``exit`` (the process
exits 3), ``hang`` (the rank stops making progress but still answers the agent between polls),
``stuck`` (it stops and never looks at the agent again, as code stuck outside collectives) or
``silent`` (the rank trains on but prints no more lines, so only a log rule that reads this rank
can notice). Every event is appended as a JSON line to ``<ctl>/events.jsonl`` with the pid, rank
and time, which is what the tests and the benchmark read.
"""

# ruff: noqa: E402 - the check below must run before this script imports torch
import sys

# Whether torch was imported before this script ran: the agent's standby interpreter
# (--process-standby) imports it before it is handed a rank; a new process has not.
PREIMPORTED = "torch" in sys.modules

import argparse
import datetime as dt
import json
import os
import signal
import time

import torch
import torch.distributed as dist

from hyperpod_agent.worker import CheckpointClient, InProcessRestart

parser = argparse.ArgumentParser()
parser.add_argument("--ctl", required=True)
parser.add_argument("--steps", type=int, default=40)
parser.add_argument("--step-time", type=float, default=0.05)
parser.add_argument("--ckpt-every", type=int, default=3)
parser.add_argument("--pg-timeout", type=float, default=60.0)
parser.add_argument("--ignore-sigterm", action="store_true")
args = parser.parse_args()

if args.ignore_sigterm:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

events_path = os.path.join(args.ctl, "events.jsonl")


def record(event, **fields):
    line = json.dumps({"event": event, "pid": os.getpid(), "time": time.time(), **fields})
    with open(events_path, "a") as f:
        f.write(line + "\n")


ipr = InProcessRestart()
ckpt = CheckpointClient("model")
record("spawned", local_rank=int(os.environ.get("LOCAL_RANK", -1)), standby=PREIMPORTED)


def train(info):
    ipr.init_process_group("gloo", timeout=dt.timedelta(seconds=args.pg_timeout))
    rank, world = dist.get_rank(), dist.get_world_size()
    latest = ckpt.latest()
    start = latest[1] + 1 if latest else 0
    if latest:
        with open(os.path.join(latest[0], f"rank{rank}.json")) as f:
            assert json.load(f)["step"] == latest[1]
    record(
        "start",
        rank=rank,
        world=world,
        start_step=start,
        restart_count=info.restart_count,
        env_restart_count=os.environ["TORCHELASTIC_RESTART_COUNT"],
        job_restart_count=os.environ.get("JOB_RESTART_COUNT"),
    )
    silent = False
    for step in range(start, args.steps):
        ipr.check()
        fault_file = os.path.join(args.ctl, f"fault_rank{rank}")
        if os.path.exists(fault_file):
            with open(fault_file) as f:
                mode = f.read().strip()
            os.unlink(fault_file)
            record("fault", rank=rank, mode=mode, step=step)
            if mode == "raise":
                raise RuntimeError(f"injected fault at step {step}")
            if mode == "exit":
                os._exit(3)
            if mode == "hang":
                while True:  # no progress, no log lines; only the agent can get us out
                    time.sleep(0.05)
                    ipr.check()
            if mode == "stuck":
                while True:
                    time.sleep(0.05)
            if mode == "silent":
                silent = True
        t = torch.tensor([float(rank + 1)])
        dist.all_reduce(t)
        assert t.item() == world * (world + 1) / 2, t
        if not silent:
            print(f"STEP {step} rank {rank} sum {t.item()}", flush=True)
        record("step", rank=rank, step=step, restart_count=info.restart_count)
        if (step + 1) % args.ckpt_every == 0:
            path = os.path.join(args.ctl, "ckpt", f"step_{step}")
            os.makedirs(path, exist_ok=True)
            with open(os.path.join(path, f"rank{rank}.json"), "w") as f:
                json.dump({"step": step}, f)
            ckpt.update(step, path)
        time.sleep(args.step_time)
    dist.barrier()
    record("done", rank=rank)


ipr.run(train)
