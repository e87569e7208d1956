"""hyperpod_agent: the agent that runs in every training pod (``hyperpodrun``).

The agent side (``hyperpod_agent.run``) is a torchrun-compatible launcher driven over HTTP by the
control plane. Training scripts import only :mod:`hyperpod_agent.worker`, the small worker-side API
for in-process restart and checkpoint progress; importing this package does not import torch.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
