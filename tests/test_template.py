"""template.yaml, samconfig.toml and events/ agree with each other and with the code.
(`sam validate --lint` and `sam build` run in .ci/run.)"""

from __future__ import annotations

import json
import tomllib
from typing import Any

import pytest
import yaml
from conftest import EVENTS, REPO

from local import gateway

PATHS = {
    "status_update": "/api/whatsapp/sessions/status-update",
    "messages_received": "/api/whatsapp/messages/received",
    "messages_batch": "/api/whatsapp/messages/batch",
    "message_event": "/api/whatsapp/messages/event",
    "qr_update": "/api/whatsapp/sessions/qr-update",
    "webhook_evolution": "/api/whatsapp/webhooks/evolution",
    "webhook_waha": "/api/whatsapp/webhooks/waha",
    "webhook_meta": "/api/whatsapp/webhooks/meta",
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load((REPO / "template.yaml").read_text(), Loader=gateway.CfnLoader)
    return loaded


def resources(template: dict[str, Any], kind: str) -> dict[str, Any]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


#: A gateway's second route: one URL per gateway connection (docs/gateway-connections.md).
CONNECTION_PATHS = {name: f"{path}/{{connection_id}}" for name, path in PATHS.items() if name.startswith("webhook_")}


def test_one_function_per_endpoint_each_on_an_any_route_of_the_http_api(template: dict[str, Any]) -> None:
    routes = {(r.path, r.method, r.code_dir.name) for r in gateway.load_routes(REPO / "template.yaml")}
    expected = [*PATHS.items(), *CONNECTION_PATHS.items()]
    assert routes == {(path, "ANY", name) for name, path in expected}
    for name, function in resources(template, "AWS::Serverless::Function").items():
        event, *_ = function["Properties"]["Events"].values()
        if name in ("ReplayFunction", "MediaFunction"):
            assert event["Type"] == "SQS"
            assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        elif name == "MediaDispatchFunction":
            assert event["Type"] == "Schedule"
        else:
            assert event["Type"] == "HttpApi"
            assert event["Properties"]["ApiId"] == "HttpApi"


def test_functions_run_python_313_on_arm64_with_the_shared_layer(template: dict[str, Any]) -> None:
    function = template["Globals"]["Function"]
    assert function["Runtime"] == "python3.13"
    assert function["Architectures"] == ["arm64"]
    assert function["Layers"] == ["IngestLayer"]
    assert function["Timeout"] < 30  # below API Gateway's integration limit
    assert function["Tracing"] == "Active"
    for name, resource in resources(template, "AWS::Serverless::Function").items():
        overrides = resource["Properties"]
        assert "Layers" not in overrides and "Tracing" not in overrides, name
        # Only the queue consumer, which no API waits on, may run longer.
        assert "Timeout" not in overrides or name in ("ReplayFunction", "MediaFunction"), name


def test_layer_is_built_by_sam_from_shared(template: dict[str, Any]) -> None:
    layer = template["Resources"]["IngestLayer"]
    assert layer["Properties"]["ContentUri"] == "shared/"
    assert layer["Metadata"]["BuildMethod"] == "python3.13"
    assert (REPO / "shared" / "requirements.txt").exists()


def test_stage_parameter_and_each_endpoints_url_as_an_output(template: dict[str, Any]) -> None:
    assert template["Parameters"]["Stage"]["AllowedValues"] == ["dev", "prod"]
    for output in template["Outputs"].values():
        condition, on_domain, on_api = output["Value"]  # !If (the loader keeps the arguments)
        assert condition == "HasMtls"
        assert on_domain.startswith("https://${MtlsDomainName}/api/") and on_api.startswith("https://${HttpApi}.")
    outputs = {o["Value"][2] for o in template["Outputs"].values()}
    assert {o[o.index("/api/") :] for o in outputs} == set(PATHS.values())


# --- the front door: floods cannot starve the orchestrator ------------------------------


def test_every_function_has_a_reserved_concurrency_of_its_own_from_a_parameter(template: dict[str, Any]) -> None:
    parameters = template["Parameters"]
    reserved = []
    for name, function in resources(template, "AWS::Serverless::Function").items():
        parameter = function["Properties"]["ReservedConcurrentExecutions"]
        assert parameter == name.removesuffix("Function") + "ReservedConcurrency", name
        assert parameters[parameter]["Type"] == "Number" and parameters[parameter]["MinValue"] >= 1
        reserved.append(parameter)
    assert len(set(reserved)) == len(reserved) == len(resources(template, "AWS::Serverless::Function")), "one each"
    # The replay's event source runs up to MaximumConcurrency batches at once: never throttle it.
    replay = template["Resources"]["ReplayFunction"]["Properties"]["Events"]["Queue"]["Properties"]
    assert parameters["ReplayReservedConcurrency"]["MinValue"] >= replay["ScalingConfig"]["MaximumConcurrency"]


def test_the_api_stage_writes_one_json_access_log_line_per_request_with_its_request_id(
    template: dict[str, Any],
) -> None:
    settings = template["Resources"]["HttpApi"]["Properties"]["AccessLogSettings"]
    line = json.loads(settings["Format"])  # a JSON object per request once API Gateway fills it in
    assert "\n" not in settings["Format"]
    assert line["requestId"] == "$context.requestId"  # = the functions' correlation_id
    assert {"ip", "status", "routeKey", "responseLatency", "integrationError"} <= set(line)
    assert settings["DestinationArn"] == "ApiAccessLogs.Arn"
    assert template["Resources"]["ApiAccessLogs"]["Properties"]["RetentionInDays"] == "LogRetentionDays"


def test_mutual_tls_is_optional_and_when_on_is_the_only_way_in(template: dict[str, Any]) -> None:
    parameters = template["Parameters"]
    mtls = ["MtlsDomainName", "MtlsCertificateArn", "MtlsTruststoreUri"]
    assert all(parameters[p]["Default"] == "" for p in mtls), "off unless configured"
    # On only with all three; and the Rules refuse a partial configuration.
    assert template["Conditions"]["HasMtls"] == [[[p, ""]] for p in mtls]  # !And of three !Not !Equals
    assertions = template["Rules"]["MtlsNeedsItsCertificateAndTruststore"]["Assertions"]
    assert [a["Assert"] for a in assertions] == [[[p, ""]] for p in mtls]
    domain = template["Resources"]["MtlsDomain"]
    assert domain["Condition"] == "HasMtls"
    assert domain["Properties"]["MutualTlsAuthentication"]["TruststoreUri"] == "MtlsTruststoreUri"
    assert template["Resources"]["MtlsDomainMapping"]["Properties"]["ApiId"] == "HttpApi"
    # Otherwise the default execute-api endpoint would let anyone around the certificate check.
    api = template["Resources"]["HttpApi"]["Properties"]
    assert api["DisableExecuteApiEndpoint"] == ["HasMtls", True, False]


def test_every_function_logs_to_a_group_with_retention(template: dict[str, Any]) -> None:
    groups = resources(template, "AWS::Logs::LogGroup")
    for function in resources(template, "AWS::Serverless::Function").values():
        group = groups[function["Properties"]["LoggingConfig"]["LogGroup"]]
        assert group["Properties"]["RetentionInDays"]


class TaggedLoader(yaml.SafeLoader):
    """Keeps each intrinsic as {tag: operand}, so a condition can be evaluated."""


TaggedLoader.add_multi_constructor(
    "!",
    lambda loader, suffix, node: {
        suffix: loader.construct_sequence(node, deep=True)
        if isinstance(node, yaml.SequenceNode)
        else loader.construct_scalar(node)
    },
)


def condition(template: dict[str, Any], name: str, parameters: dict[str, str]) -> bool:
    """The value of a template condition (Equals, And, Or, Not, Condition, Ref) for these parameters."""

    def value(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        ((tag, operand),) = node.items()
        if tag == "Ref":
            return parameters.get(operand, template["Parameters"][operand].get("Default"))
        if tag == "Condition":
            return value(template["Conditions"][operand])
        if tag == "Equals":
            return str(value(operand[0])) == str(value(operand[1]))
        if tag == "And":
            return all(value(item) for item in operand)
        if tag == "Or":
            return any(value(item) for item in operand)
        if tag == "Not":
            return not value(operand[0])
        raise AssertionError(f"unexpected intrinsic !{tag}")

    return bool(value(template["Conditions"][name]))


@pytest.mark.parametrize(
    ("stage", "setting", "required"),
    [
        ("prod", None, True),
        ("dev", None, False),
        ("prod", "false", False),
        ("dev", "true", True),
        ("prod", "true", True),
        ("dev", "stage-default", False),
    ],
)
def test_signatures_are_required_in_prod_unless_turned_off_and_in_dev_only_when_turned_on(
    stage: str, setting: str | None, required: bool
) -> None:
    template = yaml.load((REPO / "template.yaml").read_text(), Loader=TaggedLoader)
    parameters = {"Stage": stage} | ({"RequireSignature": setting} if setting else {})

    assert condition(template, "SignatureRequired", parameters) is required
    variable = template["Globals"]["Function"]["Environment"]["Variables"]["REQUIRE_SIGNATURE"]
    assert variable == {"If": ["SignatureRequired", "true", "false"]}


def test_samconfig_has_dev_as_default_and_prod() -> None:
    config = tomllib.loads((REPO / "samconfig.toml").read_text())
    assert config["default"]["deploy"]["parameters"]["parameter_overrides"] == 'Stage="dev"'
    assert config["prod"]["deploy"]["parameters"]["parameter_overrides"] == 'Stage="prod"'


@pytest.mark.parametrize("path", sorted(EVENTS.glob("*/*.json")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_sample_event_is_an_http_api_v2_event_for_its_endpoint(path: Any) -> None:
    event = json.loads(path.read_text())
    assert event["version"] == "2.0"
    assert event["rawPath"] == PATHS[path.parent.name]
    assert event["routeKey"] == f"ANY {event['rawPath']}"
    assert event["requestContext"]["http"]["method"] in {"GET", "POST", "PUT", "PATCH", "DELETE"}


@pytest.mark.parametrize(
    "dead_letter, source", [("RetryDeadLetterQueue", "RetryQueue"), ("MediaDeadLetterQueue", "MediaQueue")]
)
def test_each_dead_letter_queue_takes_only_its_own_queue_as_its_source(
    template: dict[str, Any], dead_letter: str, source: str
) -> None:
    resources = template["Resources"]
    policy = resources[dead_letter]["Properties"]["RedriveAllowPolicy"]
    (allowed,) = policy["sourceQueueArnList"]
    name = str(resources[source]["Properties"]["QueueName"])
    assert policy["redrivePermission"] == "byQueue"
    assert str(allowed).endswith(":" + name)
    assert resources[source]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"] == f"{dead_letter}.Arn"
    # No other queue names a dead-letter queue: each has exactly one source.
    sources = [
        key
        for key, resource in resources.items()
        if resource["Type"] == "AWS::SQS::Queue"
        and resource["Properties"].get("RedrivePolicy", {}).get("deadLetterTargetArn") == f"{dead_letter}.Arn"
    ]
    assert sources == [source]


def test_webhook_and_media_functions_read_only_connection_secrets_under_the_prefix(template: dict[str, Any]) -> None:
    for name in ("WebhookEvolutionFunction", "WebhookWahaFunction", "WebhookMetaFunction", "MediaFunction"):
        statements = template["Resources"][name]["Properties"]["Policies"][0]["Statement"]
        (read,) = [s for s in statements if s["Sid"] == "ReadConnectionSecrets"]
        assert read["Action"] == "secretsmanager:GetSecretValue"
        assert str(read["Resource"]).endswith(":secret:whatsapp-ingest/${Stage}/connections/*")


def test_the_default_deployment_logs_in_as_the_least_privilege_role_with_verified_tls(
    template: dict[str, Any],
) -> None:
    parameters = template["Parameters"]
    assert parameters["SupabaseUrl"]["Default"] == ""  # no Data API: the database secret's database_url
    assert parameters["DatabaseSslMode"]["Default"] == "verify-full"
    deploy = (REPO / "docs" / "DEPLOY.md").read_text(encoding="utf-8")
    database = deploy[deploy.index("**Database** — ") :]
    first_secret = database[database.index("--secret-string '") :].split("'")[1]
    assert json.loads(first_secret)["database_url"].startswith("postgresql://whatsapp_ingest.")
    # No long-lived token minted with the legacy JWT secret is documented any more.
    assert "JWT_SECRET" not in deploy and "jwt.encode" not in deploy
