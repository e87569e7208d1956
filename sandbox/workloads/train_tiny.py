"""A small real PyTorch training job for the sandbox: a tiny regression model trained data-parallel
over gloo, one process per ``--nproc-per-node`` slot, under hyperpodrun
(this project's, or AWS's: checkpoints are reported through the client of the agent that runs it).

Every rank sees its own shard of a fixed synthetic dataset (y = 3x - 1 plus noise); gradients are
averaged over the ranks with one all-reduce per step, as DistributedDataParallel does, so every
rank ends with the same weights, which the script checks at the end. The script does DDP's
all-reduce itself: constructing ``DistributedDataParallel`` imports torch._dynamo, 1.4 s of CPU per
worker, which the sandbox's many short-lived workers would pay again and again.
Checkpoints go under ``--ckpt-dir`` (default: the pod's working directory) every
``--ckpt-every`` steps and are reported to the agent, so a restarted job resumes from the last
step every rank finished. Faults for tests, on the first attempt only (a restarted job runs
clean, as a fixed transient fault would): ``--fail-at-step`` makes global rank ``--fail-rank``
raise, ``--hang-at-step`` makes it stop making progress (no log line: a log rule catches it).

Elastic training: the world size may differ between attempts (a job shrunk on a lost node, grown
back later). The checkpoint holds the model only, so any world size resumes it; with
``--global-batch-size`` every optimizer step still sees that many samples, whatever the world
size: each rank accumulates gradients over ``global / (world x --micro-batch-size)`` micro-batches
(one all-reduce after the last, as DDP's ``no_sync`` does), the usual way to keep the
hyperparameters of a job that changes size. A graceful ``/stop`` (before a planned resize) sends
the workers SIGUSR1; with ``HYPERPOD_SIGNAL_COORDINATION=distributed`` every rank learns of it at
the same step (``elastic_event_detected`` all-reduces the flag), checkpoints that step, reports it
and exits, so the resized job resumes exactly there.
"""

import argparse
import datetime as dt
import json
import os
import sys
import time

import torch
import torch.distributed as dist

try:  # under AWS's agent (hyperpod-elastic-agent): its client speaks its worker socket's protocol
    from hyperpod_elastic_agent import CheckpointDiscoverySocketClient
except ImportError:
    CheckpointDiscoverySocketClient = None
from hyperpod_agent.worker import CheckpointClient, elastic_event_detected, install_elastic_event_handler


class AwsCheckpointClient:
    """This script's checkpoint reports through AWS's client: it gives the path of the latest
    checkpoint every rank finished, whose name carries the step."""

    def __init__(self, prefix: str) -> None:
        self.client = CheckpointDiscoverySocketClient(prefix, num_model_checkpoints=1)

    def latest(self):
        path = self.client.get_latest_checkpoint_path()
        return (path, int(path.rsplit("_", 1)[1])) if path else None

    def update(self, step: int, path: str) -> None:
        self.client.update(step, path, "model_checkpoint")


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=300)
parser.add_argument("--step-time", type=float, default=0.0, help="extra seconds per step")
parser.add_argument("--ckpt-every", type=int, default=50)
parser.add_argument("--ckpt-dir", default="checkpoints")
parser.add_argument("--fail-at-step", type=int, default=-1)
parser.add_argument("--fail-rank", type=int, default=0)
parser.add_argument("--hang-at-step", type=int, default=-1)
parser.add_argument(
    "--global-batch-size",
    type=int,
    default=0,
    help="samples per optimizer step over all ranks (0: 256 per rank)",
)
parser.add_argument("--micro-batch-size", type=int, default=32)
args = parser.parse_args()
install_elastic_event_handler()  # before the process group: a signal during its setup is kept

dist.init_process_group("gloo", timeout=dt.timedelta(seconds=60))
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
model = torch.nn.Linear(1, 1)
for param in model.parameters():  # every rank starts from rank 0's weights, as with DDP
    dist.broadcast(param.data, 0)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
generator = torch.Generator().manual_seed(1000 + rank)
x = torch.rand(256, 1, generator=generator) * 2 - 1
y = 3 * x - 1 + 0.01 * torch.randn(256, 1, generator=generator)

if args.global_batch_size:
    per_step = world * args.micro_batch_size
    if args.global_batch_size % per_step or args.global_batch_size // per_step * args.micro_batch_size > len(
        x
    ):
        sys.exit(
            f"--global-batch-size {args.global_batch_size} is not a multiple of world size {world} x "
            f"--micro-batch-size {args.micro_batch_size} within {len(x)} samples per rank: choose one that is"
        )
    accumulate = args.global_batch_size // per_step
else:
    accumulate = 0  # one full-shard batch per step
if rank == 0 and accumulate:
    print(
        f"world {world}: {accumulate} micro-batch(es) of {args.micro_batch_size} per rank per step",
        flush=True,
    )


def average_gradients() -> None:
    """The ranks' gradients averaged in one bucket, one all-reduce: DDP's reducer, for two
    parameters."""
    grads = [p.grad for p in model.parameters()]
    bucket = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(bucket)
    bucket /= world
    offset = 0
    for g in grads:
        g.copy_(bucket[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def train_step(step: int) -> torch.Tensor:
    """One optimizer step; with gradient accumulation, ``accumulate`` micro-batches per rank."""
    optimizer.zero_grad()
    if not accumulate:
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        average_gradients()
        optimizer.step()
        return loss
    total = torch.zeros(())
    for i in range(accumulate):
        lo = ((step * accumulate + i) * args.micro_batch_size) % len(x)
        xb, yb = x[lo : lo + args.micro_batch_size], y[lo : lo + args.micro_batch_size]
        loss = torch.nn.functional.mse_loss(model(xb), yb) / accumulate
        loss.backward()  # accumulates locally; the ranks exchange once, after the last
        total += loss.detach()
    average_gradients()
    optimizer.step()
    return total


def save(step: int) -> None:
    path = os.path.join(args.ckpt_dir, f"step_{step}")
    os.makedirs(path, exist_ok=True)
    if rank == 0:
        torch.save(model.state_dict(), os.path.join(path, "model.pt"))
    dist.barrier()  # the checkpoint exists before any rank reports it complete
    ckpt.update(step, path)


ckpt = AwsCheckpointClient("tiny") if CheckpointDiscoverySocketClient else CheckpointClient("tiny")
start = 0
latest = ckpt.latest()
if latest:
    state = torch.load(os.path.join(latest[0], "model.pt"))
    model.load_state_dict(state)
    start = latest[1] + 1
print(f"rank {rank}/{world} starting at step {start}", flush=True)

first_attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) == 0
for step in range(start, args.steps):
    if first_attempt and rank == args.fail_rank and step == args.fail_at_step:
        raise RuntimeError(f"injected failure at step {step}")
    if first_attempt and rank == args.fail_rank and step == args.hang_at_step:
        print(f"rank {rank} hangs at step {step}", flush=True)
        while True:
            time.sleep(1)
    loss = train_step(step)
    if step % 25 == 0 or step == args.steps - 1:
        print(f"step {step} loss {loss.item():.5f}", flush=True)
    if (step + 1) % args.ckpt_every == 0:
        save(step)
    if elastic_event_detected():  # a graceful /stop: checkpoint this step and leave
        if (step + 1) % args.ckpt_every:
            save(step)
        print(f"rank {rank} stopping gracefully after step {step}", flush=True)
        sys.stdout.flush()
        os._exit(0)
    if args.step_time:
        time.sleep(args.step_time)

weight = model.weight.detach().clone()
gathered = [torch.zeros_like(weight) for _ in range(world)]
dist.all_gather(gathered, weight)
assert all(torch.equal(g, weight) for g in gathered), "ranks disagree on the weights"
print(json.dumps({"rank": rank, "weight": weight.item(), "bias": model.bias.item()}), flush=True)
# Every rank leaves together, then leaves at once: the process group is torn down neither by
# destroy_process_group() nor by the interpreter's exit. With gloo on torch 2.13 both can abort
# ("terminate called without an active exception", SIGABRT) when a peer's connection closes
# first, which turns a job that finished its work into a worker crash (seen in CI: the last rank
# aborted after step 199 of 200, and the supervisor rightly restarted it).
dist.barrier()
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
