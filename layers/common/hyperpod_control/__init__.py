"""hyperpod_control: the domain library of the HyperPod serverless control plane.

Shipped as the Lambda layer ``CommonLayer`` and installed locally by ``pip install -e .``.
Dependencies point one way: ``models`` (pydantic, no I/O) <- ``adapters`` (AWS, Kubernetes, the
store) <- ``services`` (decisions and steps) <- ``functions/*/app.py`` (thin handlers);
``tests/unit/test_layering.py`` keeps it so.
"""

__version__ = "0.1.0"
