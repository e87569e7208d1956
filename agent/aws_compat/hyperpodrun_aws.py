"""Run AWS's HyperPod elastic agent (``hyperpod-elastic-agent`` 1.1.3) on torch 2.12 and later.

AWS's ``hyperpodrun`` builds torchrun's parser and adds its own ``--shutdown-timeout`` to it; since
torch 2.12 torchrun defines that option itself, so argparse stops the agent at start with
"conflicting option string: --shutdown-timeout". This launcher removes torch's option from the
parser first, then runs AWS's agent unchanged: ``--shutdown-timeout`` is the agent's (default 15 s,
the grace between the shutdown signal and SIGKILL), which torch reads under the same name.

In a training image, next to ``pip install --no-deps hyperpod-elastic-agent==1.1.3`` (its own
``torch<2.12`` pin would pull an older torch) and its server (``fastapi``, ``uvicorn``, ``psutil``):

    COPY hyperpodrun_aws.py /opt/hyperpod/hyperpodrun_aws.py
    ENTRYPOINT ["python", "/opt/hyperpod/hyperpodrun_aws.py", "--nproc-per-node=8", "/workspace/train.py"]

Every argument is AWS's ``hyperpodrun``'s. On torch before 2.12 there is nothing to remove and this
is plain ``hyperpodrun``.
"""

from __future__ import annotations

import argparse

from hyperpod_elastic_agent import run as hyperpod_run
from torch.distributed import run as torchrun

OPTION = "--shutdown-timeout"


def parser_without_torchs_shutdown_timeout() -> argparse.ArgumentParser:
    """torchrun's parser less its own ``--shutdown-timeout`` (every spelling of it), so that the
    agent can add its flag of the same name."""
    parser = torchrun.get_args_parser()
    for action in list(parser._actions):
        if OPTION in action.option_strings:
            # argparse's own removal of a conflicting option: its strings, then the action itself
            parser._handle_conflict_resolve(action, [(s, action) for s in action.option_strings])
    return parser


def main() -> None:
    # run.py imported get_args_parser by name: replace that name, the agent's code stays as it is
    hyperpod_run.get_args_parser = parser_without_torchs_shutdown_timeout
    hyperpod_run.main()


if __name__ == "__main__":
    main()
