"""moto extensions: the parts of a HyperPod account moto 5.2.5 lacks, behaving as AWS documents them.

``install()`` (idempotent; ``sandbox.patches.install()`` calls it) adds, in process and in
moto's server alike:

- EKS add-ons with their version catalogue and configuration schemas (``eks_addons``,
  ``catalog``), Pod Identity associations (``pod_identity``), access entries and access
  policies (``access_entries``), a cluster's ``accessConfig``, endpoint access and
  ``update_cluster_config``/``describe_update`` (``eks_cluster``);
- SageMaker HyperPod clusters orchestrated by EKS, with EC2-style node ids, reboot, replace,
  software update and node status over time (``sagemaker_hyperpod``);
- Service Quotas for SageMaker cluster usage and the VPC ENI quota (``quotas``), and the AWS
  managed IAM policies the project attaches (``iam_policies``);
- a fault hook: the next N calls of any operation throttle or fail (``api_faults``);
- an event bus's resource policy evaluated on ``PutEvents`` (``event_bus_policy``), each call's
  caller recorded.

Asynchronous changes run on sandbox time (``configure(clock=..., scale=...)``, ``set_delays``)
and are applied lazily when a resource is read: no background thread.

How it plugs into moto: methods are added to the services' Response classes (moto resolves the
operation from the botocore model, then calls the method of the same snake_case name) and the
EKS URL patterns to ``moto.eks.urls.url_paths``. In process, moto reads that dict on every
request; the server builds each service's Flask URL map on the service's first request, so
``install()`` must run before the server sees its first EKS call (the Sandbox installs the
patches before it starts moto).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from sandbox.aws_ext import api_faults
from sandbox.aws_ext._base import delays, reset_delays, set_delays
from sandbox.clock import ManualClock, clock

__all__ = [
    "ManualClock",
    "api_faults",
    "configure",
    "delays",
    "install",
    "reset",
    "set_delays",
]

_installed = False
_lock = threading.Lock()


def configure(
    clock_fn: Callable[[], float] | None = None,
    *,
    scale: float | Callable[[], float] | None = None,
    **delay_values: float,
) -> None:
    """Set sandbox time: ``clock_fn`` returns sandbox seconds; or wall time divided by ``scale``
    (a number or a callable; by default the active Sandbox's ``time_scale``). Keyword delays
    (``addon_create=30`` ...) are in sandbox seconds, see ``_base.Delays``."""
    clock.configure(clock_fn, scale)
    if delay_values:
        set_delays(**delay_values)


def reset() -> None:
    """Back to defaults: sandbox clock, delays, no armed faults (moto's reset clears the rest)."""
    from sandbox.aws_ext import event_bus_policy

    clock.configure(None, None)
    reset_delays()
    api_faults.clear()
    event_bus_policy.clear()


def install() -> None:
    global _installed
    with _lock:
        if _installed:
            return
        from moto.eks import urls as eks_urls
        from moto.eks.responses import EKSResponse

        from sandbox.aws_ext import (
            access_entries,
            eks_addons,
            eks_cluster,
            event_bus_policy,
            pod_identity,
            quotas,
            sagemaker_hyperpod,
        )

        for module in (eks_cluster, eks_addons, pod_identity, access_entries):
            module.install(EKSResponse)
            for route in module.ROUTES:
                eks_urls.url_paths.setdefault(route, EKSResponse.dispatch)
        sagemaker_hyperpod.install()
        quotas.install()
        event_bus_policy.install()
        api_faults.install()
        _installed = True
