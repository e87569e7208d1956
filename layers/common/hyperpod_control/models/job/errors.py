"""The error of a HyperPodPyTorchJob the control plane will not run, and the form of its lines
(``<path>: <what is wrong>; <the fix>``): raised by the validation and by the resource model when a
job lacks what the supervisor needs.
"""

from __future__ import annotations

from hyperpod_control.exceptions import InvalidInputError


class JobSpecError(InvalidInputError):
    """A HyperPodPyTorchJob the control plane will not run; ``problems`` has one line per fault,
    each ``<path>: <what is wrong>; <the fix>``."""

    def __init__(self, problems: list[str], *, job: str | None = None) -> None:
        self.problems = list(problems)
        self.job = job
        subject = f"HyperPodPyTorchJob {job}" if job else "HyperPodPyTorchJob"
        super().__init__(f"{subject} is invalid: " + "; ".join(self.problems))


def problem(path: str, what: str, fix: str | None = None) -> str:
    """One line of a ``JobSpecError``: the Kubernetes path, what is wrong, and the fix when known."""
    return f"{path}: {what}; {fix}" if fix else f"{path}: {what}"
