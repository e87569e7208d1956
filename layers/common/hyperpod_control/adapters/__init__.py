"""Adapters: the edge where the control plane meets AWS, Kubernetes and its own store.

Each adapter takes its client injected (``client=None`` builds one lazily) and maps the foreign
errors (``botocore`` ``ClientError``, Kubernetes ``ApiException``) to ``hyperpod_control.exceptions``.
"""
