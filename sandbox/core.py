"""``Sandbox``: an emulated AWS account with the project's stack deployed and running in it.

    with Sandbox(SandboxConfig(server=True)) as sb:
        sfn = sb.client("stepfunctions")
        result = sb.run_execution("RegisterClusterStateMachine", {"clusterName": "demo", ...})

In-process mode (``server=False``) uses ``mock_aws``: fastest, for unit and integration tests in
one process. Server mode runs moto's HTTP server on 127.0.0.1 so that any process reaches it
through ``AWS_ENDPOINT_URL`` (``hpctl sandbox up``, the demo, tests over real HTTP). In both,
Lambda handlers run in this process.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hyperpod_control.adapters.stepfunctions import Outcome, follow
from sandbox import active, patches
from sandbox.clock import SandboxClock
from sandbox.eventbus import EventDelivery, ScheduleRunner
from sandbox.kube.cluster import ClusterSeed
from sandbox.lambdas import LambdaRuntime
from sandbox.stack import ACCOUNT, DeployedStack, StackDeployer
from sandbox.workloads import IMAGE_PATHS
from sandbox.world import World, WorldOptions

log = logging.getLogger("sandbox")

REPO_ROOT = Path(__file__).resolve().parent.parent

#: What every client of the sandbox needs; credentials are moto's dummies, never real ones.
BASE_ENV = {
    "AWS_ACCESS_KEY_ID": "sandbox",
    "AWS_SECRET_ACCESS_KEY": "sandbox",
    "AWS_SESSION_TOKEN": "sandbox",
    "AWS_DEFAULT_REGION": "us-west-2",
    "AWS_REGION": "us-west-2",
    # moto builds ~1,000 public AMIs into every region's EC2 backend (0.8 s of CPU per sandbox);
    # nothing here launches an instance from an image.
    "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
}
#: A directory: every sandbox of this process writes there what its functions used (``make iam-report``).
IAM_USAGE_ENV = "SANDBOX_IAM_USAGE_DIR"
#: Only for the handlers running in process: no X-Ray daemon. Metrics stay on: their EMF goes to
#: the function's log group and moto's CloudWatch, as on Lambda (``sandbox.cloudwatch``), where the
#: alarms read them. (Disabled, Powertools never clears them and prints all 100 at once anyway.)
HANDLER_ENV = {
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_DISABLED": "false",
}


@dataclass
class SandboxConfig:
    template: Path = REPO_ROOT / "template.yaml"
    stack_name: str = "hyperpod-control-plane"
    region: str = "us-west-2"
    #: Wall seconds per sandbox second: Waits, Retry intervals, callback timeouts, Lambda async
    #: retries and scheduled rules all run on it. 1.0 is real time.
    time_scale: float = 0.01
    #: Run moto as an HTTP server on ``host`` (port 0: any free port) instead of in process.
    server: bool = False
    host: str = "127.0.0.1"
    port: int = 0
    parameters: dict[str, str] = field(default_factory=dict)
    #: Load AWS managed IAM policies into moto (about 1 s; needed to attach them to roles).
    load_managed_policies: bool = False
    #: The HyperPod world to build at start (VPC, EKS cluster, HyperPod cluster); None: none.
    world: WorldOptions | None = None
    #: Serve the world's EKS cluster with the sandbox Kubernetes API server (needs ``world``).
    kube: bool = False
    kube_seed: ClusterSeed | None = None
    #: Where to write the kubeconfig (default: a file in a temporary directory of this sandbox).
    kubeconfig: Path | None = None
    #: Run pods as local processes (scheduler + kubelets) on the world's nodes (needs ``kube``).
    pods: bool = True
    #: Seconds each pod waits before its containers start: image pull and container start.
    pod_start_delay: float = 0.0
    #: Serve the fault injector to other processes (``hpctl sandbox fail-node``...).
    control: bool = False
    #: Where each function's output goes, one ``<function>.log`` each (default: a new temporary
    #: directory, kept after the sandbox stops); also in moto's CloudWatch Logs.
    log_dir: Path | None = None


class Sandbox:
    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.clock = SandboxClock(self.config.time_scale)
        self.runtime = LambdaRuntime(sleep=self.clock.sleep)
        self.delivery = EventDelivery(self.runtime, self.client, self.clock, self.config.region, ACCOUNT)
        self.stack: DeployedStack | None = None
        self.endpoint_url: str | None = None
        self._mock: Any = None
        self._server: Any = None
        self._scheduler: ScheduleRunner | None = None
        self.world: World | None = None
        self.kube: Any = None
        self.pods: Any = None
        #: the nodes' EKS Pod Identity Agent, and the moto server pods reach AWS at when the
        #: sandbox itself runs moto in process (``pods_endpoint_url``)
        self.pod_identity: Any = None
        self._pods_aws_server: Any = None
        self.pods_endpoint_url: str | None = None
        self.faults: Any = None
        self.control: Any = None
        self._mirrors: list[Any] = []
        self.kubeconfig: Path | None = None
        self._tmp: Any = None
        self._saved_env: dict[str, str | None] = {}
        self._saved_sfn_config: bool | None = None
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()
        #: the functions' logs and metrics, AWS's own metrics (``sandbox.cloudwatch``)
        self.monitor: Any = None

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def time_scale(self) -> float:
        return self.config.time_scale

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _setenv(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def start(self) -> Sandbox:
        patches.install()
        active.activate(self)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        cfg = self.config
        self._setenv({**BASE_ENV, "AWS_DEFAULT_REGION": cfg.region, "AWS_REGION": cfg.region, **HANDLER_ENV})
        moto_config = {
            "stepfunctions": {"execute_state_machine": True},
            "iam": {"load_aws_managed_policies": cfg.load_managed_policies},
        }
        if cfg.server:
            from moto.core.config import default_user_config
            from moto.server import ThreadedMotoServer

            self._saved_sfn_config = default_user_config["stepfunctions"]["execute_state_machine"]
            default_user_config["stepfunctions"]["execute_state_machine"] = True
            default_user_config["iam"]["load_aws_managed_policies"] = cfg.load_managed_policies
            # One line per request from werkzeug would bury everything else the sandbox prints.
            logging.getLogger("werkzeug").setLevel(logging.ERROR)
            self._server = ThreadedMotoServer(ip_address=cfg.host, port=cfg.port, verbose=False)
            self._server.start()
            host, port = self._server.get_host_and_port()
            self.endpoint_url = f"http://{host}:{port}"
            # MOTO_PORT: where moto's ASL interpreter sends its own Lambda/SDK calls.
            self._setenv({"AWS_ENDPOINT_URL": self.endpoint_url, "MOTO_PORT": str(port)})
        else:
            from moto import mock_aws

            self._mock = mock_aws(config=moto_config)
            self._mock.start()
        self._forget_cached_clients()
        self._start_monitor()
        deployer = StackDeployer(
            cfg.template, cfg.stack_name, cfg.region, self.client, self.runtime, self._parameters()
        )
        self.stack = deployer.deploy()
        self._assume_function_roles()
        # Handlers run in this process and read their configuration from os.environ; setting it
        # here (not only per invocation) puts it under _setenv, so stop() restores the caller's.
        self._setenv({k: v for spec in self.runtime.functions.values() for k, v in spec.environment.items()})
        self._scheduler = self.delivery.schedule_runner()
        self._scheduler.start()
        if cfg.world is not None:
            self.world = self.build_world(cfg.world)
            if cfg.kube:
                self._start_kube(self.world, cfg.kube_seed)
        elif cfg.kube:
            raise ValueError(
                "SandboxConfig.kube needs a world (SandboxConfig.world) whose EKS cluster it serves"
            )

    def _start_monitor(self) -> None:
        import tempfile

        from sandbox import cloudwatch

        cloudwatch.install()
        log_dir = self.config.log_dir or Path(tempfile.mkdtemp(prefix="hyperpod-sandbox-logs-"))
        self.monitor = cloudwatch.Monitor(self.config.region, self.clock.now, log_dir)
        self.runtime.monitor = self.monitor
        cloudwatch.activate(self.monitor)

    @property
    def log_dir(self) -> Path | None:
        """The directory of the functions' log files (``<function name>.log``)."""
        return self.monitor.log_dir if self.monitor is not None else None

    def alarm(self, name: str) -> dict:
        """An alarm of the stack (its logical id or name) as DescribeAlarms returns it."""
        assert self.stack is not None, "sandbox not started"
        alarm_name = self.stack.resources.get(name, name)
        (alarm,) = self.client("cloudwatch").describe_alarms(AlarmNames=[alarm_name])["MetricAlarms"]
        return alarm

    def alarm_breaching(self, name: str) -> list[Any]:
        """The periods in which the alarm's metric (moto's data, which the sandbox's services and
        functions put there) crossed its threshold; empty: it would not fire."""
        from sandbox import cloudwatch

        return cloudwatch.breaching_periods(self.config.region, self.alarm(name))

    def _assume_function_roles(self) -> None:
        """From here on every function acts as its own role (``sandbox.identity``)."""
        from sandbox import iam, identity

        def hash_key(table: str) -> str | None:
            from moto.dynamodb.models import dynamodb_backends

            try:
                return dynamodb_backends[ACCOUNT][self.config.region].get_table(table).hash_key_attr
            except Exception:
                return None

        identity.assume_all(
            self.runtime.functions.values(),
            self.client("sts"),
            iam.Where(self.config.region, ACCOUNT),
            key_names=hash_key,
            token_owner=patches.task_token_owner,
            report=Path(self.config.template).resolve() == (REPO_ROOT / "template.yaml").resolve(),
        )

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.stop()
            self._scheduler.join(timeout=5)
            self._scheduler = None
        try:
            self.delivery.wait_idle(timeout=30)
        except TimeoutError as exc:
            log.warning("stopping with deliveries in flight: %s", exc)
        self.delivery.shutdown()
        if self.stack is not None:
            self._stop_executions()
        for mirror in self._mirrors:  # before moto is reset: they read its state
            mirror.stop()
        self._mirrors = []
        if self.control is not None:
            self.control.stop()
            self.control = None
        if self.pods is not None:
            self.pods.stop()  # every pod's processes end before the API server they report to
            self.pods = None
        if self.pod_identity is not None:
            self.pod_identity.stop()
            self.pod_identity = None
        if self._pods_aws_server is not None:
            self._pods_aws_server.stop()
            self._pods_aws_server = None
        self.pods_endpoint_url = None
        if self.kube is not None:
            self.kube.stop()
            self.kube = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        from sandbox import aws_ext
        from sandbox.identity import REGISTRY, dump_usage

        if os.environ.get(IAM_USAGE_ENV):
            dump_usage(os.environ[IAM_USAGE_ENV])
        REGISTRY.clear()
        if self.monitor is not None:
            from sandbox import cloudwatch

            cloudwatch.activate(None)
            self.monitor.close()
            self.runtime.monitor = None
        aws_ext.reset()  # armed faults, delays and clock overrides; moto's reset clears the rest
        if self._mock is not None:
            self._mock.stop()
            self._mock = None
        if self._server is not None:
            import urllib.request

            try:  # moto's backends are process-wide: leave none of this sandbox's state behind
                urllib.request.urlopen(
                    urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST"), timeout=5
                )
            except OSError as exc:
                log.warning("could not reset moto: %s", exc)
            self._server.stop()
            self._server = None
            from moto.core.config import default_user_config

            if self._saved_sfn_config is not None:
                default_user_config["stepfunctions"]["execute_state_machine"] = self._saved_sfn_config
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
        self._forget_cached_clients()
        active.activate(None)

    def _stop_executions(self) -> None:
        try:
            sfn = self.client("stepfunctions")
            for sm in sfn.list_state_machines()["stateMachines"]:
                for ex in sfn.list_executions(stateMachineArn=sm["stateMachineArn"], statusFilter="RUNNING")[
                    "executions"
                ]:
                    sfn.stop_execution(executionArn=ex["executionArn"], cause="sandbox stopped")
        except Exception as exc:  # stopping must go on
            log.warning("could not stop running executions: %s", exc)

    def _forget_cached_clients(self) -> None:
        self._clients.clear()
        try:
            from hyperpod_control.adapters.aws import reset_clients
            from hyperpod_control.settings import get_settings
        except ImportError:
            return
        reset_clients()
        get_settings.cache_clear()

    # -- clients and environment ----------------------------------------------------------------

    def client(self, service: str) -> Any:
        with self._clients_lock:
            if service not in self._clients:
                import boto3

                self._clients[service] = boto3.session.Session().client(
                    service, region_name=self.config.region, endpoint_url=self.endpoint_url
                )
            return self._clients[service]

    @property
    def env(self) -> dict[str, str]:
        """What another process needs to reach this sandbox (server mode), outputs included."""
        values = {**BASE_ENV, "AWS_DEFAULT_REGION": self.config.region, "AWS_REGION": self.config.region}
        if self.endpoint_url:
            values["AWS_ENDPOINT_URL"] = self.endpoint_url
        values["HPCTL_STACK"] = self.config.stack_name
        if self.stack:
            values.update({f"HPCTL_OUTPUT_{k}": v for k, v in self.stack.outputs.items()})
        if self.world:
            values.update(self.world.env())
        if self.kubeconfig:
            values["KUBECONFIG"] = str(self.kubeconfig)
        if self.control:
            values["HPCTL_SANDBOX_CONTROL"] = self.control.url
        return values

    def output(self, name: str) -> str:
        assert self.stack is not None, "sandbox not started"
        return self.stack.outputs[name]

    # -- Lambda and EventBridge (called by the patches) -----------------------------------------

    def _parameters(self) -> dict[str, str]:
        """The template's parameters for this sandbox. A job watch lasts most of the minute between
        two of the schedule's runs: on the sandbox clock too, so that the runs do not pile up."""
        scaled = {"JobWatchSeconds": str(max(1, math.ceil(55 * self.config.time_scale)))}
        template = self.stack_template_parameters()
        return {**{k: v for k, v in scaled.items() if k in template}, **self.config.parameters}

    def stack_template_parameters(self) -> set[str]:
        from sandbox.template import load_template

        return set((load_template(self.config.template).get("Parameters") or {}).keys())

    def invoke_lambda(self, function_name: str, event: Any) -> tuple[Any, str | None]:
        return self.runtime.invoke(function_name, event)

    def invoke_lambda_event(self, function_name: str, event: Any) -> None:
        """An asynchronous Invoke (``InvocationType=Event``): see ``EventDelivery``."""
        self.delivery.invoke_lambda_event(function_name, event)

    def deliver_to_target(self, rule: Any, target: dict, event: Any) -> None:
        """An EventBridge rule's target gets ``event`` (already shaped by Input/InputPath)."""
        self.delivery.deliver_to_target(rule, target, event)

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Block until every event accepted so far has been delivered (and retried)."""
        self.delivery.wait_idle(timeout)

    # -- the emulated HyperPod world ----------------------------------------------------------

    def build_world(self, options: WorldOptions | None = None) -> World:
        """A HyperPod cluster orchestrated by an EKS cluster, in a VPC (see ``sandbox.world``)."""
        from dataclasses import replace

        from sandbox.world import build_world

        options = replace(options or WorldOptions(), region=self.config.region, account_id=ACCOUNT)
        return build_world(self.client, options)

    def _start_kube(self, world: World, seed: ClusterSeed | None) -> None:
        """Serve the world's EKS cluster: EKS token auth against its access entries, its nodes."""
        import tempfile

        from sandbox.kube import (
            EksAccessEntryAuthorizer,
            EksTokenVerifier,
            KubeApiServer,
            point_eks_cluster_at,
            seed_cluster,
        )
        from sandbox.kube.cluster import sync_hyperpod_nodes

        self.kube = KubeApiServer(
            host=self.config.host,
            verifier=EksTokenVerifier(world.eks_cluster_name, sts_endpoint_url=self.endpoint_url),
            authorizer=EksAccessEntryAuthorizer(self.client("eks"), world.eks_cluster_name),
        ).start()
        point_eks_cluster_at(self.kube, world.eks_cluster_name, self.config.region, ACCOUNT)
        sync_hyperpod_nodes(self.kube.store, self.client("sagemaker"), world.hyperpod_cluster_name)
        seed_cluster(self.kube.store, seed or ClusterSeed())
        from sandbox.kube.pod_identity import PodIdentityAgent, PodIdentityWebhook

        # EKS Pod Identity: pods of an associated service account get credentials of its role
        webhook = PodIdentityWebhook(self.client("eks"), world.eks_cluster_name)
        self.kube.store.admission.append(webhook.admit)
        if self.config.kubeconfig is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="hyperpod-sandbox-")
            self.kubeconfig = Path(self._tmp.name) / "kubeconfig"
        else:
            self.kubeconfig = Path(self.config.kubeconfig)
        self.kube.kubeconfig(self.kubeconfig)
        if self.config.pods:
            from sandbox.cluster_faults import Faults
            from sandbox.kube.runtime import KubeRuntime

            self.pod_identity = PodIdentityAgent(
                self.client("eks"),
                self.client("sts"),
                self.client("iam"),
                world.eks_cluster_name,
                host=self.config.host,
            ).start()
            aws = {"AWS_ENDPOINT_URL": self._pods_endpoint(), "AWS_DEFAULT_REGION": self.config.region}
            self.pods = KubeRuntime(
                self.kube,
                start_delay=self.config.pod_start_delay,
                image_paths=IMAGE_PATHS,
                aws_env=aws,
                pod_identity=self.pod_identity,
            ).start()
            self.faults = Faults(
                self.pods,
                self.client("events"),
                sagemaker=self.client("sagemaker"),
                cluster_name=world.hyperpod_cluster_name,
                time_scale=self.config.time_scale,
            )
            if self.config.control:
                from sandbox.control import ControlServer

                self.control = ControlServer(self.faults, host=self.config.host).start()
        # What AWS changes outside Kubernetes shows up in it: the add-on's objects when it is
        # ACTIVE, a rebooted or replaced node going down and coming back.
        from sandbox.kube.addon_mirror import AddonMirror
        from sandbox.kube.node_mirror import NodeRepairMirror

        where = {"region": self.config.region, "account_id": ACCOUNT}
        self._mirrors = [AddonMirror(self.kube.store, world.eks_cluster_name, **where).start()]
        if self.pods is not None:
            self._mirrors.append(NodeRepairMirror(self.pods, world.hyperpod_cluster_name, **where).start())

    def _pods_endpoint(self) -> str:
        """Where pods reach the emulated AWS: moto's HTTP server, started for them when the
        sandbox runs moto in process (both serve the same process-wide state)."""
        if self.endpoint_url:
            self.pods_endpoint_url = self.endpoint_url
            return self.endpoint_url
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._pods_aws_server = ThreadedMotoServer(ip_address=self.config.host, port=0, verbose=False)
        self._pods_aws_server.start()
        host, port = self._pods_aws_server.get_host_and_port()
        self.pods_endpoint_url = f"http://{host}:{port}"
        return self.pods_endpoint_url

    def grant_control_plane_access(self) -> None:
        """What the install's EnsureAccess step leaves in the world's cluster (the functions' access
        entries by tier, the tiers' RBAC), done as the account's administrator: for tests that
        start from an operator already installed instead of running the install workflow."""
        from kubernetes import client as k8s

        from hyperpod_control.adapters.eks import EksAdapter
        from hyperpod_control.adapters.kube import KubeAdapter
        from hyperpod_control.models.install import ClusterRef
        from hyperpod_control.services import install

        assert self.world is not None and self.kube is not None, "needs a world served by the sandbox"
        spec = self.runtime.lookup(f"{self.config.stack_name}-ClusterAccessFunction")
        tiers = install.parse_kubernetes_functions(spec.environment["KUBERNETES_CLIENT_FUNCTIONS"])
        principals = install.control_plane_principals(tiers, self.client("lambda"))
        cluster = ClusterRef(
            cluster_arn=self.world.hyperpod_cluster_arn,
            cluster_name=self.world.hyperpod_cluster_name,
            eks_cluster_name=self.world.eks_cluster_name,
        )
        api = k8s.ApiClient(self.kube.client_configuration())
        with KubeAdapter(self.world.eks_cluster_name, api_client=api) as kube:
            install.ensure_access(cluster, principals, EksAdapter(client=self.client("eks")), kube)

    # -- Step Functions -------------------------------------------------------------------------

    def state_machine_arn(self, name: str) -> str:
        """A state machine's ARN from its logical id, its name or its ARN."""
        assert self.stack is not None
        if name.startswith("arn:"):
            return name
        if name in self.stack.resources:
            return self.stack.resources[name]
        for arn in self.stack.resources.values():
            if arn.endswith(f":stateMachine:{name}"):
                return arn
        raise KeyError(f"no state machine {name} in stack {self.stack.name}")

    def start_execution(self, state_machine: str, payload: Any, name: str | None = None) -> str:
        # Always named: moto leaves $$.Execution.Id ending in "None" for unnamed executions.
        kwargs = {
            "stateMachineArn": self.state_machine_arn(state_machine),
            "input": json.dumps(payload),
            "name": name or str(uuid.uuid4()),
        }
        return self.client("stepfunctions").start_execution(**kwargs)["executionArn"]

    def wait_execution(self, execution_arn: str, timeout: float = 60.0) -> Outcome:
        return follow(self.client("stepfunctions"), execution_arn, timeout=timeout, out=None)

    def run_execution(self, state_machine: str, payload: Any, timeout: float = 60.0) -> Outcome:
        return self.wait_execution(self.start_execution(state_machine, payload), timeout)
