"""deploy/github-oidc-role.yaml, deployed once per stage: each deploy role trusts one
GitHub subject, can deploy everything its own stage's stack creates and nothing of the
other stage's (when both share an account), creates roles only within its stage's
permissions boundary, and that boundary is worth something only to its stage's functions.

The template is resolved as CloudFormation would for each Stage (Ref, Sub, If,
conditions) and its policies evaluated the way IAM does for the calls that matter.
cfn-lint and checkov check it too (make validate, make check-security)."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO

OIDC_ROLE_TEMPLATE = REPO / "deploy" / "github-oidc-role.yaml"


STAGES = ("dev", "prod")
ACCOUNT = "123456789012"
REGION = "us-east-1"
PSEUDO_PARAMETERS = {
    "AWS::Partition": "aws",
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "a-stack",
}
GITHUB = {"GitHubOrg": "example-org", "GitHubRepo": "example-repo"}
SUBJECT = {
    "dev": "repo:example-org/example-repo:ref:refs/heads/main",
    "prod": "repo:example-org/example-repo:environment:production",
}
NO_VALUE = object()


class TaggedCfnLoader(yaml.SafeLoader):
    """Reads !Ref, !Sub, !If... as their long forms ({"Ref": x}, {"Fn::Sub": x}), so a template can be resolved."""


def _tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


TaggedCfnLoader.add_multi_constructor("!", _tagged)


def load_tagged(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(path.read_text(encoding="utf-8"), Loader=TaggedCfnLoader)
    return loaded


class Resolver:
    """The values CloudFormation would give a template's intrinsic functions, for given parameters.

    A parameter without a value or default, a resource reference or an attribute
    resolves to a placeholder such as <DeployRole.Arn>."""

    def __init__(self, template: dict[str, Any], parameters: dict[str, str]) -> None:
        self.template = template
        self.values = {
            name: str(parameters.get(name, spec.get("Default", f"<{name}>")))
            for name, spec in (template.get("Parameters") or {}).items()
        }
        unknown = set(parameters) - set(self.values)
        assert not unknown, f"not parameters of the template: {unknown}"

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.values:
            return self.values[name]
        if name in PSEUDO_PARAMETERS:
            return PSEUDO_PARAMETERS[name]
        if name == "HttpApiApiGatewayDefaultStage":  # the stage SAM generates for StageName: $default
            return "$default"
        assert name in self.template["Resources"], f"!Ref to nothing: {name}"
        resource = self.template["Resources"][name]
        properties = resource.get("Properties") or {}
        if resource["Type"] == "AWS::IAM::ManagedPolicy" and "ManagedPolicyName" in properties:
            # CloudFormation's Ref of a managed policy is its ARN.
            path = self.resolve(properties.get("Path", "/"))
            policy_name = self.resolve(properties["ManagedPolicyName"])
            return f"arn:{self.ref('AWS::Partition')}:iam::{self.ref('AWS::AccountId')}:policy{path}{policy_name}"
        if resource["Type"] == "AWS::S3::Bucket" and "BucketName" in properties:
            return self.resolve(properties["BucketName"])  # a bucket's Ref is its name
        return f"<{name}>"

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.template["Conditions"][name]))

    def sub(self, argument: str | list[Any]) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else (argument[0], argument[1])
        variables = {k: self.resolve(v) for k, v in variables.items()}

        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(variables[name])
            if "." in name and name.split(".")[0] in self.template["Resources"]:
                return f"<{name}>"
            return str(self.ref(name))

        return re.sub(r"\$\{(?!!)([^}]+)\}", value, text)

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self.resolve(item) for item in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, argument),) = node.items()
            functions = {
                "Ref": lambda a: self.ref(a),
                "Condition": lambda a: self.condition(a),
                "Fn::Sub": lambda a: self.sub(a),
                "Fn::If": lambda a: self.resolve(a[1] if self.condition(a[0]) else a[2]),
                "Fn::Equals": lambda a: self.resolve(a[0]) == self.resolve(a[1]),
                "Fn::Not": lambda a: not self.resolve(a[0]),
                "Fn::And": lambda a: all(self.resolve(c) for c in a),
                "Fn::Or": lambda a: any(self.resolve(c) for c in a),
                "Fn::GetAtt": lambda a: f"<{a[0]}.{a[1]}>",
                "Fn::Join": lambda a: str(a[0]).join(str(v) for v in self.resolve(a[1])),
                "Fn::Select": lambda a: self.resolve(a[1])[int(a[0])],
            }
            if key in functions:
                return functions[key](argument)
            if key.startswith("Fn::"):
                return f"<{key}>"  # one the tests do not evaluate: never matches a name
        return {k: v for k, v in ((k, self.resolve(v)) for k, v in node.items()) if v is not NO_VALUE}

    def resources(self) -> dict[str, dict[str, Any]]:
        """The resources that would exist, resolved."""
        return {
            name: self.resolve(resource)
            for name, resource in self.template["Resources"].items()
            if "Condition" not in resource or self.condition(resource["Condition"])
        }


def oidc_role_stack(stage: str, **parameters: str) -> dict[str, dict[str, Any]]:
    """The resources of the role stack for `stage`, as CloudFormation would create them."""
    return Resolver(load_tagged(OIDC_ROLE_TEMPLATE), {"Stage": stage, **GITHUB, **parameters}).resources()


def deploy_role(stage: str) -> dict[str, Any]:
    role: dict[str, Any] = oidc_role_stack(stage)["DeployRole"]["Properties"]
    return role


def role_statements(stage: str) -> list[dict[str, Any]]:
    return [s for policy in deploy_role(stage)["Policies"] for s in policy["PolicyDocument"]["Statement"]]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def iam_match(pattern: str, value: str) -> bool:
    """IAM's wildcard match: * any run of characters (/ and : included), ? one character."""
    return re.fullmatch(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", "."), value) is not None


def is_read_only(statement: dict[str, Any]) -> bool:
    return all(re.match(r"(Describe|List|Get|Validate)", a.split(":")[1]) for a in as_list(statement["Action"]))


def condition_arns(statement: dict[str, Any]) -> list[str]:
    return [
        arn
        for operator, keys in (statement.get("Condition") or {}).items()
        if operator.startswith("Arn")
        for values in keys.values()
        for arn in as_list(values)
    ]


def applies_to(action: str, arn: str) -> bool:
    """Whether IAM evaluates `action` against an ARN of this kind: only one of its own service,
    and an S3 object action never against a bucket, a bucket action never against an object."""
    service = arn.split(":")[2]
    if action.split(":")[0] != service and not (action.startswith("sts:") and service == "iam"):  # roles
        return False
    object_action = "Object" in action and "Bucket" not in action  # not s3:GetBucketObjectLockConfiguration
    return service != "s3" or object_action == ("/" in arn.split(":::", 1)[1])


@dataclass(frozen=True)
class Target:
    """Something a stage's sam deploy creates or changes, and the call that does it."""

    what: str
    action: str
    arn: str
    #: The ARN a condition sees (lambda:FunctionArn for an event source mapping,
    #: iam:PolicyARN for an attached policy), if any.
    context: str | None = None
    #: For a role: the permissions boundary the call sets or the role has (iam:PermissionsBoundary), if any.
    boundary: str | None = None
    #: The tags the resource has (aws:ResourceTag), the call sets (aws:RequestTag), the call removes (aws:TagKeys).
    resource_tags: dict[str, str] = field(default_factory=dict)
    request_tags: dict[str, str] = field(default_factory=dict)
    removed_tag_keys: tuple[str, ...] = ()


def boundary_condition_holds(statement: dict[str, Any], target: Target) -> bool:
    """The statement's iam:PermissionsBoundary conditions, if any, for the target's boundary.
    IAM: a missing key fails StringEquals and satisfies StringNotEquals."""
    for operator, keys in (statement.get("Condition") or {}).items():
        for key, values in keys.items():
            if key.lower() != "iam:permissionsboundary":
                continue
            assert operator in {"StringEquals", "StringNotEquals"}, f"{statement['Sid']}: {operator}"
            matches = target.boundary in as_list(values)
            if matches != (operator == "StringEquals"):
                return False
    return True


def tag_conditions_hold(statement: dict[str, Any], target: Target) -> bool:
    """The statement's tag conditions for the target, as IAM evaluates them: a missing key fails
    StringEquals and satisfies StringNotEquals; Null "false" means the key is present."""
    for operator, keys in (statement.get("Condition") or {}).items():
        for key, values in keys.items():
            if key == "aws:TagKeys":
                assert operator == "ForAnyValue:StringEquals", f"{statement['Sid']}: {operator}"
                if not set(target.removed_tag_keys + tuple(target.request_tags)) & set(as_list(values)):
                    return False
                continue
            kind, _, tag = key.partition("/")
            if kind not in {"aws:ResourceTag", "aws:RequestTag"}:
                continue
            value = (target.resource_tags if kind == "aws:ResourceTag" else target.request_tags).get(tag)
            if operator == "Null":
                holds = (value is None) == (str(values).lower() == "true")
            else:
                assert operator in {"StringEquals", "StringNotEquals"}, f"{statement['Sid']}: {operator}"
                holds = (value in as_list(values)) == (operator == "StringEquals")
            if not holds:
                return False
    return True


def reaches(statement: dict[str, Any], target: Target, *, any_action: bool = False) -> bool:
    """`statement` matches `target`: its call (with any_action: any call that applies to that
    kind of ARN), one of its resource patterns, and its ARN conditions, if any, for the context."""
    actions = [a for a in as_list(statement["Action"]) if applies_to(a, target.arn)]
    if not (actions if any_action else target.action in actions):
        return False
    if not any(iam_match(r, target.arn) for r in as_list(statement["Resource"])):
        return False
    if not boundary_condition_holds(statement, target) or not tag_conditions_hold(statement, target):
        return False
    conditions = condition_arns(statement)
    # Other conditions (iam:PassedToService, aws:ResourceAccount...) say nothing about the stage.
    return any(iam_match(c, target.context or target.arn) for c in conditions) if conditions else True


def allows(statements: list[dict[str, Any]], target: Target) -> bool:
    """Some Allow statement grants the target's call and no Deny refuses it."""
    allowed = any(reaches(s, target) for s in statements if s["Effect"] == "Allow")
    return allowed and not any(reaches(s, target) for s in statements if s["Effect"] == "Deny")


#: The calls that create a role or change its permissions, other than attaching a managed policy.
BOUNDED_ROLE_WRITES = ("iam:CreateRole", "iam:PutRolePermissionsBoundary", "iam:PutRolePolicy", "iam:DeleteRolePolicy")
#: Every call that creates a role or changes its permissions: each needs the stage's boundary.
ROLE_WRITES = (*BOUNDED_ROLE_WRITES, "iam:AttachRolePolicy", "iam:DetachRolePolicy")
BASIC_EXECUTION = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"


def boundary_arn(stage: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:policy/whatsapp-ingest-{stage}-function-boundary"


STAGE_TAG = "whatsapp-ingest:stage"
SAMCONFIG_ENV = {"dev": "default", "prod": "prod"}


def samconfig_deploy(stage: str) -> dict[str, Any]:
    config = tomllib.loads((REPO / "samconfig.toml").read_text(encoding="utf-8"))
    parameters: dict[str, Any] = config[SAMCONFIG_ENV[stage]]["deploy"]["parameters"]
    return parameters


def mtls_parameters(stage: str) -> dict[str, str]:
    """template.yaml's optional mutual-TLS front, switched on (so its resources exist)."""
    return {
        "MtlsDomainName": f"ingest-{stage}.example.com",
        "MtlsCertificateArn": f"arn:aws:acm:{REGION}:{ACCOUNT}:certificate/0a1b2c3d",
        "MtlsTruststoreUri": f"s3://{samconfig_deploy(stage)['s3_bucket']}/mtls/truststore.pem",
    }


def api_targets(stage: str, api_id: str = "a1b2c3d4e5", domain: str | None = None) -> list[Target]:
    """The API Gateway calls a stage's deploy makes: SAM's HTTP API is imported (PUT /apis) with
    its tags in the body, then reimported, its $default stage created and changed (tagged by
    SAM too), and the optional custom domain and its mapping."""
    tags = {STAGE_TAG: stage}
    apis = f"arn:aws:apigateway:{REGION}::/apis"
    domains = f"arn:aws:apigateway:{REGION}::/domainnames"
    domain = domain or f"ingest-{stage}.example.com"
    return [
        Target("HttpApi", "apigateway:PUT", apis, request_tags=tags),
        Target("HttpApi", "apigateway:PUT", f"{apis}/{api_id}", resource_tags=tags, request_tags=tags),
        Target("HttpApi", "apigateway:DELETE", f"{apis}/{api_id}", resource_tags=tags),
        Target("HttpApi stage", "apigateway:PATCH", f"{apis}/{api_id}/stages/$default", resource_tags=tags),
        Target("HttpApi tags", "apigateway:PUT", f"arn:aws:apigateway:{REGION}::/tags/{api_id}", resource_tags=tags),
        Target("MtlsDomain", "apigateway:POST", domains, request_tags=tags),
        Target("MtlsDomain", "apigateway:PATCH", f"{domains}/{domain}", resource_tags=tags),
        Target("MtlsDomainMapping", "apigateway:POST", f"{domains}/{domain}/apimappings", resource_tags=tags),
    ]


def stage_targets(stage: str) -> list[Target]:
    """Everything the stage's sam deploy creates, named from template.yaml (mutual TLS on)."""
    app = Resolver(load_tagged(REPO / "template.yaml"), {"Stage": stage, **mtls_parameters(stage)})
    lam, sqs, logs, cw, cfn, sm = (
        f"arn:aws:{service}:{REGION}:{ACCOUNT}:"
        for service in ("lambda", "sqs", "logs", "cloudwatch", "cloudformation", "secretsmanager")
    )
    deploy = samconfig_deploy(stage)
    bucket = f"arn:aws:s3:::{deploy['s3_bucket']}"
    found = [
        Target("stack", "cloudformation:ExecuteChangeSet", f"{cfn}stack/whatsapp-ingest-{stage}/1a2b"),
        Target("artifact", "s3:PutObject", f"{bucket}/{deploy['s3_prefix']}/9f8e"),
        Target("artifact", "s3:ListBucket", bucket),
        Target("auth secret", "secretsmanager:DescribeSecret", f"{sm}secret:whatsapp-ingest/{stage}/auth-AbC123"),
    ]
    for logical_id, resource in app.resources().items():
        kind, props = resource["Type"], resource.get("Properties") or {}
        if kind == "AWS::Serverless::Function":
            function = f"{lam}function:{props['FunctionName']}"
            role = f"arn:aws:iam::{ACCOUNT}:role/whatsapp-ingest-{stage}-{logical_id}Role-1A2B3C4D5E6F"
            # The deploy passes the stage's boundary (PermissionsBoundaryArn), so every role has it.
            boundary = boundary_arn(stage)
            found += [
                Target(logical_id, "lambda:CreateFunction", function),
                Target(logical_id, "lambda:PublishVersion", f"{function}:1"),
                Target(logical_id, "lambda:PutFunctionConcurrency", function),
                Target(f"{logical_id} role", "iam:PassRole", role),
                *(Target(f"{logical_id} role", a, role, boundary=boundary) for a in BOUNDED_ROLE_WRITES),
                Target(f"{logical_id} role", "iam:AttachRolePolicy", role, context=BASIC_EXECUTION, boundary=boundary),
                Target(f"{logical_id} role", "iam:DetachRolePolicy", role, context=BASIC_EXECUTION, boundary=boundary),
            ]
            for event in (props.get("Events") or {}).values():
                if event["Type"] == "Schedule":
                    rule = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{event['Properties']['Name']}"
                    found += [
                        Target(f"{logical_id} schedule", a, rule) for a in ("events:PutRule", "events:PutTargets")
                    ]
            if any(event["Type"] == "SQS" for event in (props.get("Events") or {}).values()):
                mapping = f"{lam}event-source-mapping:0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
                for action in ("lambda:CreateEventSourceMapping", "lambda:DeleteEventSourceMapping"):
                    found.append(Target(f"{logical_id} queue mapping", action, mapping, context=function))
        elif kind == "AWS::Serverless::LayerVersion":
            found.append(Target(logical_id, "lambda:PublishLayerVersion", f"{lam}layer:{props['LayerName']}"))
            found.append(Target(logical_id, "lambda:DeleteLayerVersion", f"{lam}layer:{props['LayerName']}:3"))
        elif kind == "AWS::Serverless::HttpApi":
            assert props["Tags"] == {STAGE_TAG: stage}, "the deploy roles are scoped by this tag"
            found += [t for t in api_targets(stage) if not t.what.startswith("MtlsDomain")]
        elif kind == "AWS::ApiGatewayV2::DomainName":
            assert props["Tags"] == {STAGE_TAG: stage}, "the deploy roles are scoped by this tag"
            found += [t for t in api_targets(stage, domain=props["DomainName"]) if t.what.startswith(logical_id)]
        elif kind == "AWS::ApiGatewayV2::ApiMapping":
            found += [t for t in api_targets(stage) if t.what == logical_id]
        elif kind == "AWS::SQS::Queue":
            found.append(Target(logical_id, "sqs:CreateQueue", f"{sqs}{props['QueueName']}"))
        elif kind == "AWS::CloudWatch::Alarm":
            found.append(Target(logical_id, "cloudwatch:PutMetricAlarm", f"{cw}alarm:{props['AlarmName']}"))
        elif kind == "AWS::Logs::LogGroup":
            found.append(Target(logical_id, "logs:CreateLogGroup", f"{logs}log-group:{props['LogGroupName']}"))
            found.append(Target(logical_id, "logs:PutRetentionPolicy", f"{logs}log-group:{props['LogGroupName']}:*"))
    return found


#: Resource types the deploy role was written for (docs/DEPLOY.md: extend the role for a new one).
ROLE_COVERS = {
    "AWS::Serverless::HttpApi",
    "AWS::ApiGatewayV2::DomainName",
    "AWS::ApiGatewayV2::ApiMapping",
    "AWS::Serverless::LayerVersion",
    "AWS::Serverless::Function",
    "AWS::SQS::Queue",
    "AWS::CloudWatch::Alarm",
    "AWS::Logs::LogGroup",
}
#: The only statements that may reach the other stage's resources, because nothing in those
#: ARNs names a stage (see the role template's comments).
SHARED_STATEMENTS = {
    "CloudWatchAlarmsDescribe": "DescribeAlarms: read-only",
    "LambdaSqsEventSourceRead": "event source mappings by UUID: read and tag only",
}
#: Writes that take no resource ARN at all, so "*" is their only possible scope.
NO_ARN_WRITES = {"ApiAccessLogDeliveries": "CloudWatch Logs deliveries of the API's access logs"}


def test_the_role_template_is_deployed_per_stage_and_the_stage_must_be_chosen() -> None:
    parameters = load_tagged(OIDC_ROLE_TEMPLATE)["Parameters"]
    assert parameters["Stage"]["AllowedValues"] == list(STAGES)
    assert "Default" not in parameters["Stage"], "a forgotten Stage must fail, not deploy a dev role"
    assert {stage: deploy_role(stage)["RoleName"] for stage in STAGES} == {
        "dev": "github-actions-whatsapp-ingest-deploy-dev",
        "prod": "github-actions-whatsapp-ingest-deploy-prod",
    }


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_role_trusts_exactly_its_one_subject(stage: str) -> None:
    (trust,) = deploy_role(stage)["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Effect"] == "Allow"
    assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert trust["Principal"] == {
        "Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com"
    }
    # Exact match of one subject: no StringLike, no list, no wildcard, no tag subject.
    assert trust["Condition"] == {
        "StringEquals": {
            "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
            "token.actions.githubusercontent.com:sub": SUBJECT[stage],
        }
    }


def test_no_role_trusts_a_tag_and_each_stack_reports_its_subject() -> None:
    assert "refs/tags" not in OIDC_ROLE_TEMPLATE.read_text(encoding="utf-8")
    template = load_tagged(OIDC_ROLE_TEMPLATE)
    for stage in STAGES:
        outputs = Resolver(template, {"Stage": stage, **GITHUB}).resolve(template["Outputs"])
        assert outputs["TrustedSubject"]["Value"] == SUBJECT[stage]


@pytest.mark.parametrize("create", ["true", "false"])
def test_the_oidc_provider_is_created_only_when_asked(create: str) -> None:
    parameters = load_tagged(OIDC_ROLE_TEMPLATE)["Parameters"]
    assert parameters["CreateOidcProvider"]["AllowedValues"] == ["true", "false"]
    for stage in STAGES:
        stack = oidc_role_stack(stage, CreateOidcProvider=create)
        assert ("GitHubOidcProvider" in stack) == (create == "true")
        if create == "true":
            provider = stack["GitHubOidcProvider"]
            assert provider["Type"] == "AWS::IAM::OIDCProvider"
            assert provider["Properties"]["Url"] == "https://token.actions.githubusercontent.com"
            assert provider["Properties"]["ClientIdList"] == ["sts.amazonaws.com"]


def test_template_yaml_uses_only_resource_types_the_deploy_role_was_written_for() -> None:
    types = {r["Type"] for r in load_tagged(REPO / "template.yaml")["Resources"].values()}
    assert sorted(types - ROLE_COVERS) == [], "extend deploy/github-oidc-role.yaml, then this list"


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_role_can_deploy_everything_its_stack_creates(stage: str) -> None:
    statements = role_statements(stage)
    missing = [f"{t.what}: {t.action} {t.arn}" for t in stage_targets(stage) if not allows(statements, t)]
    assert missing == []


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_role_cannot_touch_the_other_stages_resources(stage: str) -> None:
    (other,) = set(STAGES) - {stage}
    for statement in role_statements(stage):
        if statement["Effect"] != "Allow" or (statement["Resource"] == "*" and not statement.get("Condition")):
            continue  # calls that take no ARN: read-only (test_each_stage_role_acts_only_on_this_projects_names)
        reached = sorted({f"{t.what}: {t.arn}" for t in stage_targets(other) if reaches(statement, t, any_action=True)})
        if statement["Sid"] in SHARED_STATEMENTS:
            continue
        assert reached == [], f"the {stage} role's {statement['Sid']} reaches {other}: {reached}"
    by_sid = {s["Sid"]: s for s in role_statements(stage)}
    assert is_read_only(by_sid["CloudWatchAlarmsDescribe"])
    # Changing or deleting a mapping is scoped by the function it feeds (LambdaSqsEventSourceChange).
    assert {a.split(":")[1] for a in by_sid["LambdaSqsEventSourceRead"]["Action"]} <= {
        "GetEventSourceMapping",
        "TagResource",
        "UntagResource",
        "ListTags",
    }


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_role_acts_only_on_this_projects_names(stage: str) -> None:
    s = stage
    # The shared ones: the transform, event source mappings (random IDs), alarms for
    # DescribeAlarms (read-only); HTTP APIs and domains are scoped by their stage tag.
    allowed_prefixes = {
        "cloudformation": (f":stack/whatsapp-ingest-{s}/", ":transform/"),
        "s3": (f":::{samconfig_deploy(s)['s3_bucket']}",),
        "lambda": (f":function:whatsapp-*-{s}", f":layer:whatsapp-ingest-{s}", ":event-source-mapping:"),
        "iam": (
            f":role/whatsapp-ingest-{s}-",
            ":role/github-actions-whatsapp-ingest-deploy-",
            # Denied only (DenyChangingTheBoundaryPolicies): both stages' boundaries.
            *(f":policy/whatsapp-ingest-{each}-function-boundary" for each in STAGES),
        ),
        "logs": (":log-group:/aws/lambda/whatsapp-", f":log-group:/aws/vendedlogs/whatsapp-ingest-api-{s}"),
        "sts": tuple(f":role/whatsapp-ingest-{each}-" for each in STAGES),  # denied only
        "sqs": tuple(f":whatsapp-ingest-{q}-{s}" for q in ("retry", "retry-dlq", "media", "media-dlq")),
        "cloudwatch": (
            f":alarm:whatsapp-ingest-retry-dlq-not-empty-{s}",
            f":alarm:whatsapp-ingest-media-dlq-not-empty-{s}",
            ":alarm:*",
        ),
        "events": (f":rule/whatsapp-ingest-media-dispatch-{s}",),
        "secretsmanager": (f":secret:whatsapp-ingest/{s}/",),
        "apigateway": ("::/apis", "::/tags/", "::/domainnames"),
    }
    for statement in role_statements(stage):
        services = {action.split(":")[0] for action in as_list(statement["Action"])}
        for resource in as_list(statement["Resource"]):
            if resource == "*":
                # On every resource: only reads (calls that take no ARN), or a write narrowed by a condition.
                no_arn = statement["Sid"] in NO_ARN_WRITES
                assert is_read_only(statement) or statement.get("Condition") or no_arn, (
                    f"{statement['Sid']} writes everywhere"
                )
                continue
            assert resource.startswith("arn:aws:") and "<" not in resource, f"{statement['Sid']}: {resource}"
            for service in services:
                assert any(p in resource for p in allowed_prefixes[service]), f"{statement['Sid']}: {resource}"


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_role_can_describe_its_secrets_but_never_read_them(stage: str) -> None:
    statements = role_statements(stage)
    actions = [a.lower() for s in statements if s["Effect"] == "Allow" for a in as_list(s["Action"])]
    assert [a for a in actions if a.startswith("secretsmanager:")] == ["secretsmanager:describesecret"]
    # The one GetSecretValue in the template is the functions' boundary, which grants nothing by
    # itself, is attached to no one and can be attached by no one (test_the_boundary_is_...).
    text = OIDC_ROLE_TEMPLATE.read_text(encoding="utf-8").lower()
    assert text.count("secretsmanager:getsecretvalue") == 1
    (boundary,) = [r for r in oidc_role_stack(stage).values() if r["Type"] == "AWS::IAM::ManagedPolicy"]
    assert "secretsmanager:GetSecretValue" in json.dumps(boundary)


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_role_allows_no_wildcard_actions_and_cannot_delete_stacks(stage: str) -> None:
    for statement in role_statements(stage):
        for action in as_list(statement["Action"]):
            assert "*" not in action, f"{statement['Sid']}: {action}"
            assert action.lower() != "cloudformation:deletestack"


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_role_passes_roles_to_lambda_only_and_attaches_no_arbitrary_managed_policy(stage: str) -> None:
    by_sid = {s["Sid"]: s for s in role_statements(stage)}
    assert by_sid["IamPassStackRolesToLambda"]["Condition"] == {
        "StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}
    }
    attachable = by_sid["IamStackRoleManagedPolicies"]["Condition"]["ArnEquals"]["iam:PolicyARN"]
    assert all(":iam::aws:policy/" in arn for arn in attachable)
    assert not any("Administrator" in arn or "FullAccess" in arn for arn in attachable)


@pytest.mark.parametrize("stage", STAGES)
def test_no_deploy_role_can_edit_itself_or_the_other_stages_role(stage: str) -> None:
    prefix = load_tagged(OIDC_ROLE_TEMPLATE)["Parameters"]["RoleNamePrefix"]
    assert not prefix["Default"].startswith("whatsapp-ingest-")
    assert re.match(prefix["AllowedPattern"], "whatsapp-ingest-deploy") is None
    assert re.match(prefix["AllowedPattern"], prefix["Default"])
    statements = role_statements(stage)
    for target in STAGES:
        arn = f"arn:aws:iam::{ACCOUNT}:role/{deploy_role(target)['RoleName']}"
        for action in ("iam:PutRolePolicy", "iam:AttachRolePolicy", "iam:UpdateAssumeRolePolicy", "iam:DeleteRole"):
            assert not allows(statements, Target("deploy role", action, arn)), f"{stage} role may {action} {arn}"
        deny = [s for s in statements if s["Effect"] == "Deny" and arn in as_list(s["Resource"])]
        assert deny, f"{stage} role: no explicit deny on {arn}"
        assert {"iam:PutRolePolicy", "iam:AttachRolePolicy", "iam:UpdateAssumeRolePolicy"} <= set(deny[0]["Action"])


# --- the permissions boundary of the stack's roles ----------------------------------
#
# The deploy role must create its stack's roles and write their policies. Without a
# limit it could create a whatsapp-ingest-<stage>-* role with any policy, pass it to a
# function and act as that function: admin, and from there the other stage. So each
# stage has a boundary policy (what its functions need, nothing more), and the role may
# create or change a role's permissions only with that boundary.


def boundary_policy(stage: str) -> dict[str, Any]:
    (boundary,) = [r for r in oidc_role_stack(stage).values() if r["Type"] == "AWS::IAM::ManagedPolicy"]
    return boundary


def boundary_statements(stage: str) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = boundary_policy(stage)["Properties"]["PolicyDocument"]["Statement"]
    return statements


def function_needs(stage: str) -> list[Target]:
    """Every call the stage's functions make with their roles (template.yaml): their own
    policies, then what SAM's managed policies are there for: writing to the function's log
    group, and for an SQS event source, Lambda polling the queue. X-Ray is checked apart
    (its calls take no ARN)."""
    sm = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:whatsapp-ingest/{stage}"
    parameters = {"Stage": stage, "AuthSecretArn": f"{sm}/auth-AbC123", "DatabaseSecretArn": f"{sm}/database-DeF456"}
    resources = Resolver(load_tagged(REPO / "template.yaml"), parameters).resources()
    # What the Resolver leaves as placeholders: queue ARNs, log group names.
    known = {
        **{
            f"<{q}.Arn>": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{r['Properties']['QueueName']}"
            for q, r in resources.items()
            if r["Type"] == "AWS::SQS::Queue"
        },
        **{
            f"<{g}>": r["Properties"]["LogGroupName"]
            for g, r in resources.items()
            if r["Type"] == "AWS::Logs::LogGroup"
        },
    }
    needs = []
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        props = resource["Properties"]
        # Lambda sets lambda:SourceFunctionArn on the function code's calls and on its log writes.
        function = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{props['FunctionName']}"
        for policy in props.get("Policies") or []:
            for statement in policy["Statement"]:
                assert statement["Effect"] == "Allow", f"{logical_id}: {statement}"
                for action in as_list(statement["Action"]):
                    for arn in as_list(statement["Resource"]):
                        needs.append(Target(logical_id, action, known.get(arn, arn), context=function))
        group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{known[props['LoggingConfig']['LogGroup']]}"
        stream = f"{group}:log-stream:2025/01/01/[$LATEST]0a1b"
        needs += [
            Target(f"{logical_id} logs", "logs:CreateLogStream", stream, context=function),
            Target(f"{logical_id} logs", "logs:PutLogEvents", stream, context=function),
        ]
        for event in (props.get("Events") or {}).values():
            if event["Type"] == "SQS":
                queue = known[event["Properties"]["Queue"]]
                for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"):
                    needs.append(Target(f"{logical_id} queue", action, queue))
            else:  # API Gateway and EventBridge invoke through the function's resource policy, not its role
                assert event["Type"] in ("HttpApi", "Schedule"), (
                    f"{logical_id}: the boundary knows no {event['Type']} event"
                )
    return needs


def test_every_role_the_app_stack_creates_gets_the_boundary_parameter() -> None:
    """The SAM transform of template.yaml, as CloudFormation runs it: every AWS::IAM::Role it
    creates (the four functions' roles; nothing else makes one) carries PermissionsBoundaryArn."""
    translator = pytest.importorskip("samtranslator.translator.translator")
    parser = pytest.importorskip("samtranslator.parser.parser")
    template = load_tagged(REPO / "template.yaml")
    for resource in template["Resources"].values():  # local paths: sam deploy uploads them to S3
        for key in ("CodeUri", "ContentUri"):
            if key in (resource.get("Properties") or {}):
                resource["Properties"][key] = "s3://bucket/key"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        transformed = translator.Translator({}, parser.Parser()).translate(
            template, parameter_values={"Stage": "dev", "PermissionsBoundaryArn": boundary_arn("dev")}
        )
    roles = {name: r for name, r in transformed["Resources"].items() if r["Type"] == "AWS::IAM::Role"}
    functions = [name for name, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"]
    assert sorted(roles) == sorted(f"{name}Role" for name in functions)
    for name, role in roles.items():
        assert role["Properties"].get("PermissionsBoundary") == {
            "Fn::If": ["HasPermissionsBoundary", {"Ref": "PermissionsBoundaryArn"}, {"Ref": "AWS::NoValue"}]
        }, name
    assert template["Conditions"]["HasPermissionsBoundary"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "PermissionsBoundaryArn"}, ""]}]
    }


def test_the_boundary_is_a_stage_policy_attached_to_no_one() -> None:
    for stage in STAGES:
        boundary = boundary_policy(stage)["Properties"]
        assert boundary["ManagedPolicyName"] == f"whatsapp-ingest-{stage}-function-boundary"
        # A boundary grants nothing by itself; attached as a permissions policy it would.
        assert not {"Roles", "Users", "Groups", "Path"} & set(boundary), stage
        outputs = Resolver(load_tagged(OIDC_ROLE_TEMPLATE), {"Stage": stage, **GITHUB}).resolve(
            load_tagged(OIDC_ROLE_TEMPLATE)["Outputs"]
        )
        assert outputs["FunctionBoundaryArn"]["Value"] == boundary_arn(stage)
        assert f"{stage.upper()}_PERMISSIONS_BOUNDARY_ARN" in outputs["FunctionBoundaryArn"]["Description"]


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_boundary_allows_what_its_functions_need_and_nothing_more(stage: str) -> None:
    statements = boundary_statements(stage)
    assert all(
        s["Effect"] == "Allow" and set(s) <= {"Sid", "Effect", "Action", "Resource", "Condition"} for s in statements
    )
    needs = function_needs(stage)
    assert [f"{t.what}: {t.action} {t.arn}" for t in needs if not allows(statements, t)] == []
    # Nothing more: no action the functions do not use...
    allowed = {a for s in statements for a in as_list(s["Action"])}
    xray = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}  # Tracing: Active
    assert allowed == {t.action for t in needs} | xray
    # ...and "*" only for X-Ray, whose calls take no ARN.
    for statement in statements:
        if "*" in as_list(statement["Resource"]):
            assert statement["Resource"] == "*" and set(as_list(statement["Action"])) == xray, statement["Sid"]


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_boundary_is_scoped_to_its_stage(stage: str) -> None:
    (other,) = set(STAGES) - {stage}
    statements = boundary_statements(stage)
    reached = [f"{t.what}: {t.action} {t.arn}" for t in function_needs(other) if allows(statements, t)]
    assert reached == [], f"the {stage} boundary lets a role reach {other}"
    for statement in statements:
        for resource in as_list(statement["Resource"]):
            if resource != "*":
                service = as_list(statement["Action"])[0].split(":")[0]
                assert resource.startswith(f"arn:aws:{service}:{REGION}:{ACCOUNT}:"), resource
                assert stage in resource and other not in resource, f"{statement['Sid']}: {resource}"


@pytest.mark.parametrize("stage", STAGES)
def test_every_role_write_of_each_deploy_role_requires_its_stages_boundary(stage: str) -> None:
    (other,) = set(STAGES) - {stage}
    statements = role_statements(stage)
    writes = {a.lower() for a in ROLE_WRITES}
    granted = set()
    for statement in statements:
        actions = {a.lower() for a in as_list(statement["Action"])} & writes
        if statement["Effect"] != "Allow" or not actions:
            continue
        granted |= actions
        # IAM's delegation pattern: the call must set, or the role already have, exactly this boundary.
        assert statement["Condition"]["StringEquals"]["iam:PermissionsBoundary"] == boundary_arn(stage), statement
        assert statement["Resource"] == f"arn:aws:iam::{ACCOUNT}:role/whatsapp-ingest-{stage}-*", statement["Sid"]
    assert granted == writes, "the deploy needs every one of them, with the boundary"
    # The escalation the boundary closes: a stage role without this boundary (none, the other
    # stage's, any other) can be neither created nor given a policy, nor given another boundary.
    role = f"arn:aws:iam::{ACCOUNT}:role/whatsapp-ingest-{stage}-Escalate"
    admin = "arn:aws:iam::aws:policy/AdministratorAccess"
    for action in ROLE_WRITES:
        context = BASIC_EXECUTION if "Attach" in action or "Detach" in action else None
        assert allows(statements, Target("role", action, role, context=context, boundary=boundary_arn(stage)))
        for boundary in (None, boundary_arn(other), admin):
            target = Target("role", action, role, context=context, boundary=boundary)
            assert not allows(statements, target), f"{stage} role may {action} with boundary {boundary}"


@pytest.mark.parametrize("stage", STAGES)
def test_each_deploy_role_can_neither_remove_a_boundary_nor_change_a_boundary_policy(stage: str) -> None:
    statements = role_statements(stage)
    role = f"arn:aws:iam::{ACCOUNT}:role/whatsapp-ingest-{stage}-ReplayFunctionRole-1A2B3C4D5E6F"
    remove = Target("role", "iam:DeleteRolePermissionsBoundary", role, boundary=boundary_arn(stage))
    (deny,) = [s for s in statements if s["Effect"] == "Deny" and reaches(s, remove)]
    assert "Condition" not in deny, "unconditional"
    edits = ("iam:CreatePolicyVersion", "iam:DeletePolicy", "iam:SetDefaultPolicyVersion", "iam:DeletePolicyVersion")
    for each in STAGES:
        (deny,) = [
            s
            for s in statements
            if s["Effect"] == "Deny" and boundary_arn(each) in as_list(s["Resource"]) and "Condition" not in s
        ]
        assert set(edits) <= set(deny["Action"]), f"{stage} role: {each} boundary"
    # And nothing allows them, nor any other call on a policy.
    for statement in statements:
        if statement["Effect"] == "Allow":
            actions = {a.lower() for a in as_list(statement["Action"])}
            assert not actions & {a.lower() for a in (*edits, "iam:DeleteRolePermissionsBoundary")}, statement["Sid"]
            assert not any(":policy/" in r and ":iam::aws:" not in r for r in as_list(statement["Resource"]))
    # Belt and braces: whatever else is allowed, no role write without exactly this boundary.
    (guard,) = [
        s
        for s in statements
        if s["Effect"] == "Deny" and "iam:PermissionsBoundary" in (s.get("Condition") or {}).get("StringNotEquals", {})
    ]
    assert guard["Condition"] == {"StringNotEquals": {"iam:PermissionsBoundary": boundary_arn(stage)}}
    assert {a.lower() for a in guard["Action"]} == {a.lower() for a in ROLE_WRITES}
    assert guard["Resource"] == f"arn:aws:iam::{ACCOUNT}:role/whatsapp-ingest-{stage}-*"


# --- stage isolation when both stages share an account -------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_dev_role_cannot_touch_prod_api_nor_prod_role_dev_api(stage: str) -> None:
    (other,) = set(STAGES) - {stage}
    statements = role_statements(stage)
    assert all(allows(statements, t) for t in api_targets(stage))
    theirs = [f"{t.what}: {t.action} {t.arn}" for t in api_targets(other, api_id="f9e8d7c6b5") if allows(statements, t)]
    assert theirs == [], f"the {stage} role reaches the {other} API"
    api = f"arn:aws:apigateway:{REGION}::/apis/a1b2c3d4e5"
    tags = f"arn:aws:apigateway:{REGION}::/tags/a1b2c3d4e5"
    for sneaky in (
        Target("an API of no stage", "apigateway:PUT", f"arn:aws:apigateway:{REGION}::/apis"),
        Target("own API retagged to the other stage", "apigateway:PUT", api, {STAGE_TAG: stage}, {STAGE_TAG: other}),
        Target("own API's tag changed", "apigateway:PUT", tags, {STAGE_TAG: stage}, {STAGE_TAG: other}),
        Target(
            "own API's stage tag removed", "apigateway:DELETE", tags, {STAGE_TAG: stage}, removed_tag_keys=(STAGE_TAG,)
        ),
        Target("the other API retagged to this stage", "apigateway:PUT", tags, {STAGE_TAG: other}, {STAGE_TAG: stage}),
        Target("an untagged API", "apigateway:PATCH", f"arn:aws:apigateway:{REGION}::/apis/0a0a0a0a0a"),
        Target("a REST API", "apigateway:PATCH", f"arn:aws:apigateway:{REGION}::/restapis/0a0a0a0a0a"),
    ):
        assert not allows(statements, sneaky), f"the {stage} role may: {sneaky.what}"


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_has_its_own_artifact_bucket_which_its_role_can_only_fill(stage: str) -> None:
    (other,) = set(STAGES) - {stage}
    stack = oidc_role_stack(stage)
    bucket = stack["ArtifactBucket"]
    assert bucket["Properties"]["BucketName"] == samconfig_deploy(stage)["s3_bucket"], "samconfig names it"
    assert "resolve_s3" not in samconfig_deploy(stage), "never SAM's shared managed bucket"
    assert (
        bucket["DeletionPolicy"] == "Retain" and bucket["Properties"]["VersioningConfiguration"]["Status"] == "Enabled"
    )
    assert all(bucket["Properties"]["PublicAccessBlockConfiguration"].values())
    statements = role_statements(stage)
    own, theirs = (f"arn:aws:s3:::{samconfig_deploy(s)['s3_bucket']}" for s in (stage, other))
    assert allows(statements, Target("artifact", "s3:PutObject", f"{own}/whatsapp-ingest-{stage}/9f8e"))
    assert not allows(statements, Target("artifact", "s3:PutObject", f"{theirs}/whatsapp-ingest-{other}/9f8e"))
    # No bucket configuration (policy, ACL, versioning...) and no SAM managed stack, on any bucket.
    for statement in statements:
        if statement["Effect"] != "Allow":
            continue
        for action in as_list(statement["Action"]):
            if action.startswith("s3:"):
                assert re.fullmatch(
                    r"s3:(Put|Get)Object(Version|Tagging)?|s3:ListBucket|s3:GetBucketLocation", action
                ), action
        assert not any("aws-sam-cli-managed-default" in r for r in as_list(statement["Resource"])), statement["Sid"]
    # Belt and braces: the bucket's own policy shuts the other stage's deploy role out.
    (deny,) = [
        s
        for s in stack["ArtifactBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
        if "aws:PrincipalArn" in (s.get("Condition") or {}).get("ArnLike", {})
    ]
    assert deny["Effect"] == "Deny" and deny["Action"] == "s3:*"
    assert (
        deny["Condition"]["ArnLike"]["aws:PrincipalArn"]
        == f"arn:aws:iam::{ACCOUNT}:role/{deploy_role(other)['RoleName']}"
    )


@pytest.mark.parametrize("stage", STAGES)
def test_no_deploy_role_can_change_a_roles_trust_or_act_as_a_stack_role(stage: str) -> None:
    statements = role_statements(stage)
    allowed = {a.lower() for s in statements if s["Effect"] == "Allow" for a in as_list(s["Action"])}
    assert "iam:updateassumerolepolicy" not in allowed
    for each in STAGES:
        role = f"arn:aws:iam::{ACCOUNT}:role/whatsapp-ingest-{each}-StatusUpdateFunctionRole-1A2B"
        assert any(reaches(s, Target("role", "sts:AssumeRole", role)) for s in statements if s["Effect"] == "Deny")


@pytest.mark.parametrize("stage", STAGES)
def test_a_stack_role_trusting_anyone_but_lambda_gets_nothing_but_traces_and_polling(stage: str) -> None:
    """IAM cannot condition CreateRole on the trust it sets; the boundary instead grants the
    function code's calls (secrets, queues) and log writes only with this stage's functions'
    lambda:SourceFunctionArn, which only Lambda sets."""
    statements = boundary_statements(stage)
    outsider = [Target(t.what, t.action, t.arn) for t in function_needs(stage)]  # no lambda:SourceFunctionArn
    kept = {t.action for t in outsider if allows(statements, t)}
    # What Lambda's SQS poller does with the role (it sets no source function): the retry queue only.
    assert kept == {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}
