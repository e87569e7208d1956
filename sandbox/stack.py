"""Deploying template.yaml into the sandbox's moto account, the way CloudFormation would.

Resources are created in dependency order (Ref, GetAtt, Sub, DependsOn) through real boto3
clients; SAM resources are expanded as SAM would (a function's Globals, a state machine's
DefinitionUri with DefinitionSubstitutions). IAM roles are created in the sandbox's IAM, with
their trust and inline policies (what assumes them and what they may do is for the services that
use them: EKS Pod Identity, ``sandbox.identity``); an event bus's policy statements are put on the
bus, which evaluates them on ``PutEvents`` (``aws_ext.event_bus_policy``). Other resources that
only grant permissions in AWS (IAM policies, Lambda permissions, queue policies) are recorded as
not emulated. EventBridge Scheduler schedules (``AWS::Scheduler::Schedule``, SAM ``ScheduleV2``
events) are created in moto's scheduler backend and fired by the sandbox's scheduler (see
``sandbox.eventbus``); a ``ScheduleV2`` without ``RoleArn`` gets a sandbox role where SAM would
create one. The stack is also registered with moto's CloudFormation, outputs included, so
``hpctl`` finds it with ``describe_stacks`` as it would on AWS. CloudWatch alarms and dashboards,
SNS topics and subscriptions, and log groups with their retention are created in moto, which
stores them (``sandbox.cloudwatch`` evaluates the alarms).
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.eventbus import Schedule
from sandbox.lambdas import FunctionSpec, LambdaRuntime
from sandbox.template import Resolver, TemplateError, load_template, references, substitute_definition

ACCOUNT = "123456789012"

#: Resource types that only grant permissions or observe; AWS enforces them, the sandbox does not.
NOT_EMULATED = {
    "AWS::IAM::Policy",
    "AWS::IAM::ManagedPolicy",
    "AWS::Lambda::Permission",
    "AWS::SQS::QueuePolicy",
    "AWS::SNS::TopicPolicy",
    "AWS::S3::BucketPolicy",
}


@dataclass
class DeployedStack:
    name: str
    region: str
    template_path: Path
    outputs: dict[str, str] = field(default_factory=dict)
    #: logical id -> physical id (name, ARN or URL: what Ref returns)
    resources: dict[str, str] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def physical(self, logical_id: str) -> str:
        try:
            return self.resources[logical_id]
        except KeyError:
            raise KeyError(f"{logical_id} is not a resource of stack {self.name}") from None


class StackDeployer:
    def __init__(
        self,
        template_path: str | Path,
        stack_name: str,
        region: str,
        client: Callable[[str], Any],
        runtime: LambdaRuntime,
        parameters: dict[str, str] | None = None,
    ) -> None:
        self.template_path = Path(template_path).resolve()
        self.root = self.template_path.parent
        self.template = load_template(self.template_path)
        self.stack_name = stack_name
        self.region = region
        self.client = client
        self.runtime = runtime
        self.parameters = self._parameters(parameters or {})
        self.resolver = Resolver(
            self.template,
            pseudo={
                "AWS::Region": region,
                "AWS::AccountId": ACCOUNT,
                "AWS::StackName": stack_name,
                "AWS::Partition": "aws",
                "AWS::URLSuffix": "amazonaws.com",
                "AWS::StackId": f"arn:aws:cloudformation:{region}:{ACCOUNT}:stack/{stack_name}/sandbox",
            },
            parameters=self.parameters,
        )
        self.stack = DeployedStack(stack_name, region, self.template_path)
        self._globals = self.template.get("Globals", {})
        self._roles: dict[str, str] = {}

    # -- plumbing -------------------------------------------------------------------------------

    def _parameters(self, overrides: dict[str, str]) -> dict[str, Any]:
        declared = self.template.get("Parameters", {})
        unknown = set(overrides) - set(declared)
        if unknown:
            raise TemplateError(f"unknown parameters: {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for name, spec in declared.items():
            if name in overrides:
                values[name] = overrides[name]
            elif "Default" in spec:
                values[name] = spec["Default"]
            else:
                raise TemplateError(f"parameter {name} has no default; pass it to the sandbox")
            allowed = spec.get("AllowedValues")
            if allowed and values[name] not in allowed:
                raise TemplateError(f"parameter {name}={values[name]} is not one of {allowed}")
            # CloudFormation's Ref of a CommaDelimitedList is the list, each member space-trimmed
            # (an empty value is one empty member); AllowedPattern must match each member.
            is_list = spec.get("Type") == "CommaDelimitedList"
            if is_list:
                values[name] = [member.strip() for member in str(values[name]).split(",")]
            pattern = spec.get("AllowedPattern")
            for member in values[name] if is_list else [values[name]]:
                if pattern is not None and not re.fullmatch(pattern, str(member)):
                    raise TemplateError(
                        f"parameter {name}: {member!r} does not match AllowedPattern {pattern}"
                    )
        return values

    def _order(self) -> list[str]:
        resources = self.template["Resources"]
        deps: dict[str, set[str]] = {}
        for logical, res in resources.items():
            wanted = references(res.get("Properties", {}))
            if res.get("Type") == "AWS::Serverless::Function":
                wanted |= references(self._globals.get("Function", {}))
            depends = res.get("DependsOn", [])
            wanted |= set([depends] if isinstance(depends, str) else depends)
            deps[logical] = {d for d in wanted if d in resources and d != logical}
        order: list[str] = []
        state: dict[str, int] = {}

        def visit(node: str, path: list[str]) -> None:
            if state.get(node) == 2:
                return
            if state.get(node) == 1:
                raise TemplateError(f"circular dependency: {' -> '.join([*path, node])}")
            state[node] = 1
            for dep in sorted(deps[node]):
                visit(dep, [*path, node])
            state[node] = 2
            order.append(node)

        for logical in resources:
            visit(logical, [])
        return _as_soon_as_ready(order, deps)

    def _role(self, service: str) -> str:
        """One sandbox role per service principal; moto checks a function's role exists."""
        if service not in self._roles:
            name = f"{self.stack_name}-sandbox-{service.split('.')[0]}"
            iam = self.client("iam")
            trust = {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
                ],
            }
            try:
                arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"][
                    "Arn"
                ]
            except iam.exceptions.EntityAlreadyExistsException:
                arn = iam.get_role(RoleName=name)["Role"]["Arn"]
            self._roles[service] = arn
        return self._roles[service]

    def _set(self, logical: str, ref: str, **attrs: Any) -> None:
        self.resolver.refs[logical] = ref
        self.resolver.attrs[logical] = attrs
        self.stack.resources[logical] = ref

    # -- deploy ---------------------------------------------------------------------------------

    def deploy(self) -> DeployedStack:
        self.resolver.check_rules()
        resources = self.template["Resources"]
        for logical in self._order():
            res = resources[logical]
            rtype = res["Type"]
            self.stack.types[logical] = rtype
            if "Condition" in res and not self.resolver.condition(res["Condition"]):
                continue
            props = self.resolver.resolve(res.get("Properties", {}), where=logical)
            handler = getattr(self, "_create_" + rtype.replace("::", "_"), None)
            if handler is not None:
                handler(logical, props, res)
            elif rtype in NOT_EMULATED:
                self.stack.skipped.append(logical)
                self._set(logical, f"{self.stack_name}-{logical}", Arn=f"arn:aws:sandbox:::{logical}")
            else:
                raise TemplateError(f"{logical}: resource type {rtype} is not supported by the sandbox")
        for name, out in self.template.get("Outputs", {}).items():
            self.stack.outputs[name] = str(self.resolver.resolve(out["Value"], where=f"Outputs.{name}"))
        self._register_stack()
        return self.stack

    def _register_stack(self) -> None:
        import warnings

        cfn = self.client("cloudformation")
        body = {
            "AWSTemplateFormatVersion": "2010-09-09",
            "Description": f"Sandbox record of {self.template_path.name}; resources were created directly",
            "Resources": {"SandboxMarker": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
            "Outputs": {k: {"Value": v} for k, v in self.stack.outputs.items()},
        }
        with warnings.catch_warnings():  # moto: "WaitConditionHandle ... not supported" (harmless)
            warnings.simplefilter("ignore", UserWarning)
            cfn.create_stack(StackName=self.stack_name, TemplateBody=json.dumps(body))

    # -- resource types -------------------------------------------------------------------------

    def _create_AWS_DynamoDB_Table(self, logical: str, props: dict, res: dict) -> None:
        name = props.get("TableName") or f"{self.stack_name}-{logical}"
        ddb = self.client("dynamodb")
        kwargs: dict[str, Any] = {
            "TableName": name,
            "KeySchema": props["KeySchema"],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "BillingMode": props.get("BillingMode", "PROVISIONED"),
        }
        for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes", "StreamSpecification"):
            if key in props:
                kwargs[key] = props[key]
        if kwargs["BillingMode"] == "PROVISIONED":
            kwargs["ProvisionedThroughput"] = props["ProvisionedThroughput"]
        if props.get("SSESpecification", {}).get("SSEEnabled"):
            kwargs["SSESpecification"] = {"Enabled": True}
        desc = ddb.create_table(**kwargs)["TableDescription"]
        ttl = props.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
        self._set(logical, name, Arn=desc["TableArn"], StreamArn=desc.get("LatestStreamArn"))

    def _create_AWS_SQS_Queue(self, logical: str, props: dict, res: dict) -> None:
        name = props.get("QueueName") or f"{self.stack_name}-{logical}"
        attributes = {
            k: str(v)
            for k, v in props.items()
            if k in ("MessageRetentionPeriod", "VisibilityTimeout", "DelaySeconds", "FifoQueue")
        }
        url = self.client("sqs").create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = f"arn:aws:sqs:{self.region}:{ACCOUNT}:{name}"
        self._set(logical, url, Arn=arn, QueueName=name, QueueUrl=url)

    def _create_AWS_S3_Bucket(self, logical: str, props: dict, res: dict) -> None:
        name = (props.get("BucketName") or f"{self.stack_name}-{logical}").lower()
        s3 = self.client("s3")
        if self.region == "us-east-1":
            s3.create_bucket(Bucket=name)
        else:
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": self.region})
        self._set(logical, name, Arn=f"arn:aws:s3:::{name}", DomainName=f"{name}.s3.amazonaws.com")

    def _create_AWS_Logs_LogGroup(self, logical: str, props: dict, res: dict) -> None:
        """A log group and its retention; a name that exists fails as CloudFormation does
        (ResourceAlreadyExistsException: a function's group Lambda created before the stack did)."""
        name = props.get("LogGroupName") or f"/sandbox/{self.stack_name}/{logical}"
        logs = self.client("logs")
        logs.create_log_group(logGroupName=name)
        if props.get("RetentionInDays") is not None:
            logs.put_retention_policy(logGroupName=name, retentionInDays=int(props["RetentionInDays"]))
        self._set(logical, name, Arn=f"arn:aws:logs:{self.region}:{ACCOUNT}:log-group:{name}:*")

    def _create_AWS_SNS_Topic(self, logical: str, props: dict, res: dict) -> None:
        name = props.get("TopicName") or f"{self.stack_name}-{logical}"[:256]
        attributes = {k: str(props[k]) for k in ("DisplayName", "KmsMasterKeyId") if props.get(k)}
        arn = self.client("sns").create_topic(Name=name, Attributes=attributes)["TopicArn"]
        self._set(logical, arn, TopicArn=arn, TopicName=name)

    def _create_AWS_SNS_Subscription(self, logical: str, props: dict, res: dict) -> None:
        """The topic's subscription (moto records it; the sandbox sends no e-mail)."""
        arn = self.client("sns").subscribe(
            TopicArn=props["TopicArn"], Protocol=props["Protocol"], Endpoint=props["Endpoint"]
        )["SubscriptionArn"]
        self._set(logical, arn)

    def _create_AWS_CloudWatch_Dashboard(self, logical: str, props: dict, res: dict) -> None:
        name = props.get("DashboardName") or f"{self.stack_name}-{logical}"
        body = props["DashboardBody"]
        try:
            json.loads(body)
        except ValueError as exc:  # PutDashboard refuses it (InvalidParameterInput)
            raise TemplateError(f"{logical}: DashboardBody is not JSON after substitution: {exc}") from None
        self.client("cloudwatch").put_dashboard(DashboardName=name, DashboardBody=body)
        self._set(logical, name)

    def _create_AWS_CloudWatch_Alarm(self, logical: str, props: dict, res: dict) -> None:
        """The alarm in moto's CloudWatch, which stores it and the metrics it reads; the sandbox
        evaluates it against that data (``sandbox.cloudwatch.alarm_values``)."""
        name = props.get("AlarmName") or f"{self.stack_name}-{logical}"
        kwargs: dict[str, Any] = {"AlarmName": name}
        for key in (
            "AlarmDescription",
            "ActionsEnabled",
            "AlarmActions",
            "OKActions",
            "InsufficientDataActions",
            "Namespace",
            "MetricName",
            "Dimensions",
            "Statistic",
            "ExtendedStatistic",
            "Unit",
            "TreatMissingData",
            "ComparisonOperator",
        ):
            if props.get(key) is not None:
                kwargs[key] = props[key]
        for key in ("Period", "EvaluationPeriods", "DatapointsToAlarm"):
            if props.get(key) is not None:
                kwargs[key] = int(props[key])
        kwargs["Threshold"] = float(props["Threshold"])
        if props.get("Metrics"):
            metrics = []
            for query in props["Metrics"]:
                query = dict(query)
                if "MetricStat" in query:
                    stat = dict(query["MetricStat"])
                    stat["Period"] = int(stat["Period"])
                    query["MetricStat"] = stat
                metrics.append(query)
            kwargs["Metrics"] = metrics
        self.client("cloudwatch").put_metric_alarm(**kwargs)
        arn = f"arn:aws:cloudwatch:{self.region}:{ACCOUNT}:alarm:{name}"
        self._set(logical, name, Arn=arn)

    def _create_AWS_Events_EventBus(self, logical: str, props: dict, res: dict) -> None:
        name = props["Name"]
        arn = self.client("events").create_event_bus(Name=name)["EventBusArn"]
        self._set(logical, name, Arn=arn, Name=name)

    def _create_AWS_Events_Rule(self, logical: str, props: dict, res: dict) -> None:
        name = props.get("Name") or f"{self.stack_name}-{logical}"[:64]
        events = self.client("events")
        kwargs: dict[str, Any] = {"Name": name, "State": props.get("State", "ENABLED")}
        if "EventPattern" in props:
            kwargs["EventPattern"] = json.dumps(props["EventPattern"])
        if "ScheduleExpression" in props:
            kwargs["ScheduleExpression"] = props["ScheduleExpression"]
        if props.get("EventBusName"):
            kwargs["EventBusName"] = props["EventBusName"]
        if props.get("Description"):
            kwargs["Description"] = props["Description"]
        arn = events.put_rule(**kwargs)["RuleArn"]
        targets = [{k: v for k, v in t.items() if k in _TARGET_KEYS} for t in props.get("Targets", [])]
        if targets:
            bus = {"EventBusName": props["EventBusName"]} if props.get("EventBusName") else {}
            events.put_targets(Rule=name, Targets=targets, **bus)
        self._set(logical, name, Arn=arn)

    def _create_AWS_Events_EventBusPolicy(self, logical: str, props: dict, res: dict) -> None:
        """One statement of a bus's resource policy (``Statement``, or the legacy ``Action``,
        ``Principal`` and ``Condition``), merged into the bus's policy under ``StatementId``."""
        events = self.client("events")
        bus = props.get("EventBusName") or "default"
        sid = props["StatementId"]
        statement = dict(props.get("Statement") or {})
        if not statement:
            principal = props.get("Principal")
            statement = {
                "Effect": "Allow",
                "Principal": "*" if principal == "*" else {"AWS": f"arn:aws:iam::{principal}:root"},
                "Action": props.get("Action", "events:PutEvents"),
                "Resource": events.describe_event_bus(Name=bus)["Arn"],
            }
            if props.get("Condition"):
                c = props["Condition"]
                statement["Condition"] = {c["Type"]: {c["Key"]: c["Value"]}}
        if statement.get("Sid", sid) != sid:
            raise TemplateError(f"{logical}: Statement.Sid {statement['Sid']} is not StatementId {sid}")
        statement["Sid"] = sid
        current = events.describe_event_bus(Name=bus).get("Policy")
        document = json.loads(current) if current else {"Version": "2012-10-17", "Statement": []}
        document["Statement"] = [s for s in document["Statement"] if s.get("Sid") != sid] + [statement]
        events.put_permission(EventBusName=bus, Policy=json.dumps(document))
        self._set(logical, sid)

    def _create_AWS_IAM_Role(self, logical: str, props: dict, res: dict) -> None:
        """The role, its trust policy and inline policies, named as CloudFormation names a role
        without ``RoleName`` (``<stack>-<Logical>-<suffix>``, at most 64 characters)."""
        import hashlib

        iam = self.client("iam")
        name = props.get("RoleName")
        if not name:
            suffix = hashlib.sha256(f"{self.stack_name}/{logical}".encode()).hexdigest()[:12].upper()
            name = f"{self.stack_name}-{logical}"[: 64 - len(suffix) - 1] + f"-{suffix}"
        kwargs: dict[str, Any] = {
            "RoleName": name,
            "AssumeRolePolicyDocument": json.dumps(props["AssumeRolePolicyDocument"]),
            "Path": props.get("Path", "/"),
        }
        for key in ("Description", "MaxSessionDuration", "PermissionsBoundary", "Tags"):
            if props.get(key) is not None:
                kwargs[key] = props[key]
        role = iam.create_role(**kwargs)["Role"]
        for policy in props.get("Policies") or []:
            iam.put_role_policy(
                RoleName=name,
                PolicyName=policy["PolicyName"],
                PolicyDocument=json.dumps(policy["PolicyDocument"]),
            )
        for arn in props.get("ManagedPolicyArns") or []:
            iam.attach_role_policy(RoleName=name, PolicyArn=arn)
        self._set(logical, name, Arn=role["Arn"], RoleId=role["RoleId"])

    def _create_AWS_Serverless_LayerVersion(self, logical: str, props: dict, res: dict) -> None:
        name = props.get("LayerName") or f"{self.stack_name}-{logical}"
        content = (self.root / props["ContentUri"]).resolve()
        if not content.is_dir():
            raise TemplateError(f"{logical}: ContentUri {props['ContentUri']} is not a directory")
        # The layer's package is importable already (pip install -e . maps it); nothing to copy.
        self._set(logical, f"arn:aws:lambda:{self.region}:{ACCOUNT}:layer:{name}:1")

    def _function_props(self, props: dict) -> dict:
        merged = self.resolver.resolve(dict(self._globals.get("Function", {})), where="Globals.Function")
        env = dict(merged.get("Environment", {}).get("Variables", {}))
        env.update(props.get("Environment", {}).get("Variables", {}))
        merged.update(props)
        merged["Environment"] = {"Variables": {k: str(v) for k, v in env.items()}}
        return merged

    def _create_AWS_Serverless_Function(self, logical: str, props: dict, res: dict) -> None:
        props = self._function_props(props)
        name = props.get("FunctionName") or f"{self.stack_name}-{logical}"[:64]
        code_dir = (self.root / props["CodeUri"]).resolve()
        if not code_dir.is_dir():
            raise TemplateError(f"{logical}: CodeUri {props['CodeUri']} is not a directory")
        zipped = io.BytesIO()
        with zipfile.ZipFile(zipped, "w") as zf:
            zf.writestr("README", "code runs in process from CodeUri; see sandbox/lambdas.py")
        env = props["Environment"]["Variables"]
        role = self._function_role(logical, props)
        arn = self.client("lambda").create_function(
            FunctionName=name,
            Runtime=props.get("Runtime", "python3.11"),
            Role=role,
            Handler=props["Handler"],
            Code={"ZipFile": zipped.getvalue()},
            Timeout=int(props.get("Timeout", 3)),
            MemorySize=int(props.get("MemorySize", 128)),
            Environment={"Variables": env},
            **self._vpc_config(logical, props),
        )["FunctionArn"]
        reserved = props.get("ReservedConcurrentExecutions")
        if reserved is not None:
            self.client("lambda").put_function_concurrency(
                FunctionName=name, ReservedConcurrentExecutions=int(reserved)
            )
        invoke_config = props.get("EventInvokeConfig", {})
        dlq = props.get("DeadLetterQueue", {})
        on_failure = invoke_config.get("DestinationConfig", {}).get("OnFailure", {})
        self.runtime.register(
            FunctionSpec(
                logical_id=logical,
                name=name,
                arn=arn,
                code_dir=code_dir,
                handler=props["Handler"],
                environment=env,
                timeout=int(props.get("Timeout", 3)),
                memory=int(props.get("MemorySize", 128)),
                async_max_retries=int(invoke_config.get("MaximumRetryAttempts", 2)),
                dead_letter_arn=on_failure.get("Destination") or dlq.get("TargetArn"),
                role_arn=role,
                reserved_concurrency=int(reserved) if reserved is not None else None,
            )
        )
        self._set(logical, name, Arn=arn)
        if props.get("AutoPublishAlias"):
            arn = self._publish_alias(logical, name, str(props["AutoPublishAlias"]))
        for event_id, event in (props.get("Events") or {}).items():
            self._sam_event(logical, event_id, event, {"Id": f"{logical}{event_id}", "Arn": arn})

    def _publish_alias(self, logical: str, name: str, alias: str) -> str:
        """SAM's AutoPublishAlias: a version of the function and an alias on it, which
        ``!Ref <logical>.Alias`` / ``.Version`` name, and which the function's own SAM events invoke
        (SAM points them at the alias). ProvisionedConcurrencyConfig is not emulated: the sandbox's
        functions run in process, with no cold start for it to remove."""
        lam = self.client("lambda")
        version = lam.publish_version(FunctionName=name)["Version"]
        alias_arn = lam.create_alias(FunctionName=name, Name=alias, FunctionVersion=version)["AliasArn"]
        self.resolver.refs[f"{logical}.Version"] = f"{self.resolver.attrs[logical]['Arn']}:{version}"
        self.resolver.refs[f"{logical}.Alias"] = alias_arn
        self._set(f"{logical}Alias{alias}", alias_arn, Name=alias)
        self.stack.types[f"{logical}Alias{alias}"] = "AWS::Lambda::Alias"
        return alias_arn

    def _function_role(self, logical: str, props: dict) -> str:
        """The execution role SAM generates for a function (``<Logical>Role``): trusted by Lambda,
        one inline policy per ``Policies`` statement block, named as CloudFormation names it
        (``<stack>-<Logical>Role-<suffix>``). SAM also attaches AWSLambdaBasicExecutionRole (and
        the X-Ray write policy with Tracing): logs and traces are not AWS calls of the handlers
        here, so they are left out. A ``Role`` property names the role to use instead."""
        if props.get("Role"):
            return str(props["Role"])
        import hashlib

        suffix = hashlib.sha256(f"{self.stack_name}/{logical}".encode()).hexdigest()[:12].upper()
        name = f"{self.stack_name}-{logical}Role"[: 64 - len(suffix) - 1] + f"-{suffix}"
        iam = self.client("iam")
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "lambda.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        for index, policy in enumerate(props.get("Policies") or []):
            if not isinstance(policy, dict) or set(policy) != {"Statement"}:
                raise TemplateError(
                    f"{logical}.Policies[{index}]: only inline Statement policies are emulated, "
                    f"got {policy!r}"
                )
            document = {"Version": "2012-10-17", "Statement": policy["Statement"]}
            iam.put_role_policy(
                RoleName=name, PolicyName=f"{logical}RolePolicy{index}", PolicyDocument=json.dumps(document)
            )
        self._set(f"{logical}Role", name, Arn=arn)
        return arn

    def _vpc_config(self, logical: str, props: dict) -> dict[str, Any]:
        """CreateFunction's VpcConfig, checked as Lambda checks it: the subnets and security groups
        exist (Lambda describes them and fails the call with EC2's error) and are of one VPC.
        Lambda also requires the role to allow the ENI actions: the sandbox does not enforce IAM."""
        config = props.get("VpcConfig")
        if not config:
            return {}
        subnets, groups = list(config.get("SubnetIds") or []), list(config.get("SecurityGroupIds") or [])
        if len(subnets) > 16 or len(groups) > 5:
            raise TemplateError(f"{logical}: VpcConfig takes at most 16 SubnetIds and 5 SecurityGroupIds")
        ec2 = self.client("ec2")
        vpcs: set[str] = set()
        for kind, ids, describe, key in (
            ("subnet", subnets, ec2.describe_subnets, "Subnets"),
            ("security group", groups, ec2.describe_security_groups, "SecurityGroups"),
        ):
            if not ids:
                continue
            arg = "SubnetIds" if kind == "subnet" else "GroupIds"
            try:
                found = describe(**{arg: ids})[key]
            except ec2.exceptions.ClientError as exc:
                raise TemplateError(
                    f"{logical}: InvalidParameterValueException - error occurred while describing the "
                    f"VpcConfig's {kind}s: {exc.response['Error']['Message']}"
                ) from None
            vpcs |= {item["VpcId"] for item in found}
        if len(vpcs) > 1:
            raise TemplateError(
                f"{logical}: InvalidParameterValueException - VpcConfig's subnets and security groups "
                f"are in different VPCs ({', '.join(sorted(vpcs))})"
            )
        return {"VpcConfig": {"SubnetIds": subnets, "SecurityGroupIds": groups}}

    def _sam_event(self, logical: str, event_id: str, event: dict, target: dict) -> None:
        etype, eprops = event["Type"], event.get("Properties", {})
        rule: dict[str, Any] = {"State": "ENABLED" if eprops.get("Enabled", True) else "DISABLED"}
        if etype in ("EventBridgeRule", "CloudWatchEvent"):
            rule["EventPattern"] = eprops["Pattern"]
            if eprops.get("EventBusName"):
                rule["EventBusName"] = eprops["EventBusName"]
        elif etype == "Schedule":
            rule["ScheduleExpression"] = eprops["Schedule"]
        elif etype == "ScheduleV2":
            self._sam_schedule_v2(logical, event_id, eprops, target["Arn"])
            return
        else:
            raise TemplateError(f"{logical}.Events.{event_id}: event type {etype} is not supported")
        for key in ("Input", "InputPath", "RetryPolicy"):
            if key in eprops:
                target[key] = eprops[key]
        dlq_arn = self._sam_dead_letter_queue(logical, event_id, eprops.get("DeadLetterConfig"))
        if dlq_arn:
            target["DeadLetterConfig"] = {"Arn": dlq_arn}
        rule["Targets"] = [target]
        self._create_AWS_Events_Rule(f"{logical}{event_id}", rule, {})

    def _sam_dead_letter_queue(self, logical: str, event_id: str, config: dict | None) -> str | None:
        """A SAM event's ``DeadLetterConfig`` as SAM reads it: ``Arn`` (a queue of the stack) or
        ``Type: SQS`` (SAM creates ``QueueLogicalId``, by default ``<function><event>Queue``),
        never both. Any other key SAM ignores silently, leaving the target without the queue its
        author meant: refused here, so a template that relies on one fails in the sandbox."""
        if not config:
            return None
        unknown = set(config) - {"Arn", "Type", "QueueLogicalId"}
        if unknown:
            raise TemplateError(
                f"{logical}.Events.{event_id}.DeadLetterConfig: SAM ignores {', '.join(sorted(unknown))}; "
                "use Arn (an existing queue) or Type: SQS (a queue SAM creates)"
            )
        if "Arn" in config and "Type" in config:
            raise TemplateError(
                f"{logical}.Events.{event_id}.DeadLetterConfig: specify either Type or Arn, not both"
            )
        if config.get("Arn"):
            return str(config["Arn"])
        if config.get("Type") == "SQS":
            queue_logical = config.get("QueueLogicalId") or f"{logical}{event_id}Queue"
            self._create_AWS_SQS_Queue(queue_logical, {}, {})
            self.stack.types[queue_logical] = "AWS::SQS::Queue"
            return self.resolver.attrs[queue_logical]["Arn"]
        return None

    def _sam_schedule_v2(self, logical: str, event_id: str, eprops: dict, target_arn: str) -> None:
        """SAM's ScheduleV2 event: an AWS::Scheduler::Schedule named ``<logical><event>`` by default,
        its target the function or state machine; SAM's own role when RoleArn is not given."""
        generated = f"{logical}{event_id}"
        target: dict[str, Any] = {"Arn": target_arn, "RoleArn": eprops.get("RoleArn")}
        for key in ("Input", "RetryPolicy"):
            if key in eprops:
                target[key] = eprops[key]
        dlq_arn = self._sam_dead_letter_queue(logical, event_id, eprops.get("DeadLetterConfig"))
        if dlq_arn:
            target["DeadLetterConfig"] = {"Arn": dlq_arn}
        schedule = {k: v for k, v in eprops.items() if k in _SCHEDULE_KEYS}
        if not eprops.get("OmitName"):
            schedule.setdefault("Name", generated)
        schedule["Target"] = target
        self.stack.types[generated] = "AWS::Scheduler::Schedule"
        self._create_AWS_Scheduler_Schedule(generated, schedule, {})

    def _create_AWS_Scheduler_ScheduleGroup(self, logical: str, props: dict, res: dict) -> None:
        name = props.get("Name") or f"{self.stack_name}-{logical}"[:64]
        tags = [{"Key": t["Key"], "Value": t["Value"]} for t in props.get("Tags", [])]
        arn = self.client("scheduler").create_schedule_group(Name=name, Tags=tags)["ScheduleGroupArn"]
        self._set(logical, name, Arn=arn, State="ACTIVE")

    def _create_AWS_Scheduler_Schedule(self, logical: str, props: dict, res: dict) -> None:
        """EventBridge Scheduler: Ref is the name, GetAtt Arn the ARN. FlexibleTimeWindow,
        timezone, Start/EndDate are recorded or ignored: the sandbox fires on time, in UTC."""
        name = props.get("Name") or f"{self.stack_name}-{logical}"[:64]
        expression = props["ScheduleExpression"]
        try:
            Schedule(expression, one_time=True)
        except ValueError as exc:
            raise TemplateError(f"{logical}: {exc}") from None
        raw = props["Target"]
        target: dict[str, Any] = {
            "Arn": raw["Arn"],
            "RoleArn": raw.get("RoleArn") or self._role("scheduler.amazonaws.com"),
        }
        if raw.get("Input") is not None:
            target["Input"] = raw["Input"] if isinstance(raw["Input"], str) else json.dumps(raw["Input"])
        if raw.get("RetryPolicy"):
            target["RetryPolicy"] = {k: int(v) for k, v in raw["RetryPolicy"].items()}
        if (raw.get("DeadLetterConfig") or {}).get("Arn"):
            target["DeadLetterConfig"] = {"Arn": raw["DeadLetterConfig"]["Arn"]}
        window = dict(props.get("FlexibleTimeWindow") or {"Mode": "OFF"})
        if "MaximumWindowInMinutes" in window:
            window["MaximumWindowInMinutes"] = int(window["MaximumWindowInMinutes"])
        kwargs: dict[str, Any] = {
            "Name": name,
            "ScheduleExpression": expression,
            "FlexibleTimeWindow": window,
            "Target": target,
            "State": props.get("State", "ENABLED"),
        }
        for key in ("GroupName", "Description", "ScheduleExpressionTimezone", "KmsKeyArn"):
            if props.get(key):
                kwargs[key] = props[key]
        arn = self.client("scheduler").create_schedule(**kwargs)["ScheduleArn"]
        self._set(logical, name, Arn=arn)

    def _create_AWS_Serverless_StateMachine(self, logical: str, props: dict, res: dict) -> None:
        name = props.get("Name") or f"{self.stack_name}-{logical}"
        if "DefinitionUri" in props:
            path = (self.root / props["DefinitionUri"]).resolve()
            text = path.read_text()
            where = f"{logical} ({props['DefinitionUri']})"
        elif "Definition" in props:
            text, where = json.dumps(props["Definition"]), logical
        else:
            raise TemplateError(f"{logical}: needs DefinitionUri or Definition")
        definition = substitute_definition(text, props.get("DefinitionSubstitutions", {}), where)
        self._create_state_machine(logical, name, definition, props.get("Type", "STANDARD"))
        arn = self.resolver.refs[logical]
        for event_id, event in (props.get("Events") or {}).items():
            self._sam_event(logical, event_id, event, {"Id": f"{logical}{event_id}", "Arn": arn})

    def _create_AWS_StepFunctions_StateMachine(self, logical: str, props: dict, res: dict) -> None:
        name = props.get("StateMachineName") or f"{self.stack_name}-{logical}"
        definition = props.get("DefinitionString") or json.dumps(props["Definition"])
        definition = substitute_definition(definition, props.get("DefinitionSubstitutions", {}), logical)
        self._create_state_machine(logical, name, definition, props.get("StateMachineType", "STANDARD"))

    def _create_state_machine(self, logical: str, name: str, definition: str, sm_type: str) -> None:
        try:
            json.loads(definition)
        except ValueError as exc:
            raise TemplateError(f"{logical}: definition is not JSON after substitution: {exc}") from None
        arn = self.client("stepfunctions").create_state_machine(
            name=name, definition=definition, roleArn=self._role("states.amazonaws.com"), type=sm_type
        )["stateMachineArn"]
        self._set(logical, arn, Arn=arn, Name=name)


def _as_soon_as_ready(order: list[str], deps: dict[str, set[str]]) -> list[str]:
    """``order`` (dependencies first) with each resource moved up to right after the last of
    its dependencies, as CloudFormation creates a resource as soon as what it refers to exists.
    So a function's log group exists before the function's schedule can fire on the sandbox's
    fast clock (Lambda would create the group itself, and the stack's would then fail)."""
    dependents: dict[str, list[str]] = {n: [] for n in order}
    for node in order:
        for dep in deps[node]:
            dependents[dep].append(node)
    emitted: set[str] = set()
    result: list[str] = []

    def emit(node: str) -> None:
        emitted.add(node)
        result.append(node)
        for dependent in dependents[node]:
            if dependent not in emitted and deps[dependent] <= emitted:
                emit(dependent)

    for node in order:
        if node not in emitted:
            emit(node)
    return result


_TARGET_KEYS = {
    "Id",
    "Arn",
    "Input",
    "InputPath",
    "InputTransformer",
    "RetryPolicy",
    "DeadLetterConfig",
    "RoleArn",
}

#: What SAM's ScheduleV2 passes on to the AWS::Scheduler::Schedule it generates (Target aside).
_SCHEDULE_KEYS = {
    "Name",
    "GroupName",
    "Description",
    "ScheduleExpression",
    "ScheduleExpressionTimezone",
    "FlexibleTimeWindow",
    "State",
    "StartDate",
    "EndDate",
    "KmsKeyArn",
}
