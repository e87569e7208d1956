"""hyperpod_control: the domain library of the HyperPod serverless control plane.

Shipped as the Lambda layer ``CommonLayer`` and installed locally by ``pip install -e .``.
Dependencies point one way: ``models`` (pydantic, no I/O) <- ``services`` (decisions) <-
``adapters`` (AWS, store) <- ``functions/*/app.py`` (thin handlers).
"""

__version__ = "0.1.0"
