"""The API server's object store (kube-apiserver's registry over an in-memory map), by seam:

- ``objects``: the ``Store`` (create, read, list, update/patch, bind, delete), and what it models;
- ``errors``: ``ApiError`` and the statuses it answers (404, 409, 410, 422...);
- ``admission``: defaulting, validation and the built-in admission plugins a write passes;
- ``watch``: the event history and watch streams;
- ``collector``: the garbage collector and namespace controller (the store's background thread).

Callers import from here.
"""

from sandbox.clock import now_rfc3339
from sandbox.kube.store.admission import NOT_READY_TAINT, UNREACHABLE_TAINT
from sandbox.kube.store.errors import ApiError, bad_request
from sandbox.kube.store.objects import Store

__all__ = ["NOT_READY_TAINT", "UNREACHABLE_TAINT", "ApiError", "Store", "bad_request", "now_rfc3339"]
