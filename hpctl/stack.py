"""Where the deployed control plane is: the stack's outputs.

``hpctl`` reads them with CloudFormation ``describe_stacks`` (the sandbox registers its stack the
same way), or from ``HPCTL_OUTPUT_<Name>`` variables, which ``hpctl sandbox up`` writes into its
env file, so a shell needs no call at all.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_STACK = "hyperpod-control-plane"


class StackNotFound(Exception):
    pass


def default_stack_name(samconfig: Path | None = None) -> str:
    """The stack name: $HPCTL_STACK, else samconfig.toml's default, else the project's default."""
    if os.environ.get("HPCTL_STACK"):
        return os.environ["HPCTL_STACK"]
    path = samconfig or Path.cwd() / "samconfig.toml"
    if path.is_file():
        data = tomllib.loads(path.read_text())
        name = data.get("default", {}).get("global", {}).get("parameters", {}).get("stack_name")
        if name:
            return str(name)
    return DEFAULT_STACK


@dataclass(frozen=True)
class StackOutputs:
    stack_name: str
    values: dict[str, str]

    def __getitem__(self, key: str) -> str:
        try:
            return self.values[key]
        except KeyError:
            raise StackNotFound(
                f"stack {self.stack_name} has no output {key}. Fix: deploy it from this version of "
                "template.yaml (sam deploy)."
            ) from None


def load_outputs(stack_name: str, cloudformation: Any = None) -> StackOutputs:
    from_env = {k[len("HPCTL_OUTPUT_") :]: v for k, v in os.environ.items() if k.startswith("HPCTL_OUTPUT_")}
    if from_env and os.environ.get("HPCTL_STACK", stack_name) == stack_name:
        return StackOutputs(stack_name, from_env)
    if cloudformation is None:
        import boto3

        cloudformation = boto3.client("cloudformation")
    from hyperpod_control.adapters.aws import error_code, map_client_error

    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except Exception as exc:
        # CloudFormation answers a missing stack with ValidationError "Stack with id X does not
        # exist"; anything else (credentials, access, network) is that error, not a missing stack.
        if error_code(exc) == "ValidationError" and "does not exist" in str(exc):
            raise StackNotFound(
                f"stack {stack_name} does not exist in {cloudformation.meta.region_name}. Fix: deploy it "
                "with `sam deploy`, pass --stack, or source the env file of `hpctl sandbox up`."
            ) from None
        raise map_client_error(exc, resource=f"stack {stack_name}") from exc
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    return StackOutputs(stack_name, outputs)
