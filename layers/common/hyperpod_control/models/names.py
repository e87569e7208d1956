"""Names the install workflow and the job supervisor share: the HyperPodPyTorchJob resource and the
control plane's own marks on what it creates.

A module of its own, with no model in it, so that a handler needing a name does not import (and
define) the install workflow's models: the fault path's cold start (README, Performance).
``models/install.py`` and the ``services/install`` package re-export them under their old names.
"""

#: The HyperPodPyTorchJob resource (docs/hyperpod-contract.md, "The HyperPodPyTorchJob resource").
JOB_GROUP = "sagemaker.amazonaws.com"
JOB_VERSION = "v1"
JOB_PLURAL = "hyperpodpytorchjobs"
JOB_KIND = "HyperPodPyTorchJob"
JOB_CRD = f"{JOB_PLURAL}.{JOB_GROUP}"

#: The label the control plane puts on what it creates in a cluster, and its value.
MANAGED_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "hyperpod-control-plane"
#: The AWS tag key of the same mark (IAM roles, Pod Identity associations, access entries).
MANAGED_TAG = "hyperpod-control-plane:managed-by"

#: Labels the supervisor puts on every pod it creates: the job's name (the label AWS's operator
#: uses, so existing selectors keep working), the job's uid and the pod's index in the job.
JOB_LABEL = "HPJob"
UID_LABEL = "hyperpod.control-plane/job-uid"
INDEX_LABEL = "hyperpod.control-plane/pod-index"
#: The replica spec (``replicaSpecs[].name``) whose template built the pod.
ROLE_LABEL = "hyperpod.control-plane/replica-spec"
