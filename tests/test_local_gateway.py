"""The local gateway: routes from the template, AWS-shaped events, API Gateway's HTTP answers.

The handlers here are tiny stand-ins written to tmp_path, so these tests do not depend on
the real functions.
"""

import base64
import http.client
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest

from local import gateway

REPO = Path(__file__).resolve().parent.parent

TEMPLATE = """\
Transform: AWS::Serverless-2016-10-31
Parameters:
  Stage: {Type: String, Default: dev}
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
Globals:
  Function:
    Handler: app.lambda_handler
    Environment:
      Variables:
        STAGE: !Ref Stage
        LEVEL: !If [IsProd, INFO, DEBUG]
Resources:
  Api:
    Type: AWS::Serverless::HttpApi
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      FunctionName: !Sub echo-${Stage}
      CodeUri: echo/
      Events:
        Api:
          Type: HttpApi
          Properties: {ApiId: !Ref Api, Path: /echo, Method: ANY}
        Queue:
          Type: SQS
          Properties: {Queue: !GetAtt Queue.Arn}
  BoomFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: echo/
      Handler: app.explode
      Events:
        Api:
          Type: HttpApi
          Properties: {ApiId: !Ref Api, Path: /boom, Method: post}
  PictureFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: echo/
      Handler: app.picture
      Events:
        Api:
          Type: HttpApi
          Properties: {ApiId: !Ref Api, Path: /picture, Method: GET}
  BareFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: bare/
      Events:
        Api:
          Type: HttpApi
          Properties: {ApiId: !Ref Api, Path: /bare, Method: ANY}
  Queue:
    Type: AWS::SQS::Queue
"""

ECHO_APP = """\
import base64
import json


def lambda_handler(event, context):
    body = {
        "event": event,
        "function_name": context.function_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
    }
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body)}


def explode(event, context):
    raise RuntimeError("boom")


def picture(event, context):
    return {
        "statusCode": 201,
        "headers": {"Content-Type": "image/png"},
        "cookies": ["a=1; Path=/", "b=2"],
        "body": base64.b64encode(b"\\x89PNG\\xff").decode(),
        "isBase64Encoded": True,
    }
"""

BARE_APP = """\
def lambda_handler(event, context):
    return {"bare": True}
"""


@pytest.fixture
def template(tmp_path: Path) -> Path:
    for name, source in {"echo": ECHO_APP, "bare": BARE_APP}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "app.py").write_text(source)
    path = tmp_path / "template.yaml"
    path.write_text(TEMPLATE)
    return path


@pytest.fixture
def base_url(template: Path) -> Iterator[str]:
    server = gateway.make_server(gateway.load_routes(template), port=0)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def call(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Message, bytes]:
    """Return (status, headers, body) for any status, as a client of the gateway sees it."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def event_for(body: bytes, content_type: str | None) -> dict:
    headers = {"Content-Type": content_type} if content_type else {}
    return gateway.build_event("POST", "/echo", "", headers, body, "ANY /echo", "127.0.0.1")


def test_routes_are_read_from_the_template(template: Path) -> None:
    routes = {route.logical_id: route for route in gateway.load_routes(template)}

    assert set(routes) == {"EchoFunction", "BoomFunction", "PictureFunction", "BareFunction"}
    assert routes["EchoFunction"] == gateway.Route(
        "EchoFunction", "/echo", "ANY", template.parent / "echo", "app.lambda_handler"
    )
    assert routes["BoomFunction"].method == "POST"
    assert routes["BoomFunction"].handler == "app.explode"
    assert routes["BareFunction"].code_dir.is_absolute()


def test_the_real_template_routes_the_whatsapp_endpoints_and_gateway_webhooks() -> None:
    routes = gateway.load_routes(REPO / "template.yaml")

    assert sorted((route.method, route.path) for route in routes) == [
        ("ANY", "/api/whatsapp/messages/batch"),
        ("ANY", "/api/whatsapp/messages/event"),
        ("ANY", "/api/whatsapp/messages/received"),
        ("ANY", "/api/whatsapp/sessions/qr-update"),
        ("ANY", "/api/whatsapp/sessions/status-update"),
        ("ANY", "/api/whatsapp/webhooks/evolution"),
        ("ANY", "/api/whatsapp/webhooks/evolution/{connection_id}"),
        ("ANY", "/api/whatsapp/webhooks/meta"),
        ("ANY", "/api/whatsapp/webhooks/meta/{connection_id}"),
        ("ANY", "/api/whatsapp/webhooks/waha"),
        ("ANY", "/api/whatsapp/webhooks/waha/{connection_id}"),
    ]
    assert {route.code_dir.parent for route in routes} == {REPO / "functions"}


@pytest.mark.parametrize(
    ("path", "parameters"),
    [
        (
            "/api/whatsapp/webhooks/waha/7c1e0000-0000-4000-8000-000000000001",
            {"connection_id": "7c1e0000-0000-4000-8000-000000000001"},
        ),
        ("/api/whatsapp/webhooks/waha", None),  # the other route's
        ("/api/whatsapp/webhooks/waha/", None),  # a parameter is never empty
        ("/api/whatsapp/webhooks/waha/a/b", None),  # nor more than one segment
        ("/api/whatsapp/webhooks/meta/x", None),
    ],
)
def test_a_route_with_a_parameter_matches_one_non_empty_segment(path: str, parameters: dict[str, str] | None) -> None:
    assert gateway.path_parameters("/api/whatsapp/webhooks/waha/{connection_id}", path) == parameters


def test_the_event_has_the_http_api_v2_shape() -> None:
    event = gateway.build_event(
        "GET",
        "/echo",
        "a=1&a=2&b=x%20y",
        {"User-Agent": "curl/8", "X-Trace": "t", "Cookie": "s=1; t=2"},
        b"",
        "ANY /echo",
        "10.0.0.7",
    )

    assert event["version"] == "2.0"
    assert event["routeKey"] == "ANY /echo"
    assert event["rawPath"] == "/echo"
    assert event["rawQueryString"] == "a=1&a=2&b=x%20y"
    assert event["queryStringParameters"] == {"a": "1,2", "b": "x y"}
    assert event["cookies"] == ["s=1", "t=2"]
    assert event["headers"]["x-trace"] == "t"
    assert all(name == name.lower() for name in event["headers"])
    context = event["requestContext"]
    assert context["http"] == {
        "method": "GET",
        "path": "/echo",
        "protocol": "HTTP/1.1",
        "sourceIp": "10.0.0.7",
        "userAgent": "curl/8",
    }
    assert context["routeKey"] == "ANY /echo"
    assert context["stage"] == "$default"
    assert context["requestId"]
    assert isinstance(context["timeEpoch"], int)
    assert "body" not in event
    assert event["isBase64Encoded"] is False


def test_an_event_without_query_or_cookies_omits_those_fields() -> None:
    event = event_for(b"", None)

    assert "queryStringParameters" not in event
    assert "cookies" not in event


def test_every_event_gets_its_own_request_id() -> None:
    ids = {event_for(b"", None)["requestContext"]["requestId"] for _ in range(50)}

    assert len(ids) == 50


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/ld+json",
        "application/x-www-form-urlencoded",
    ],
)
def test_a_text_body_arrives_as_text(content_type: str | None) -> None:
    event = event_for('{"name": "José"}'.encode(), content_type)

    assert event["body"] == '{"name": "José"}'
    assert event["isBase64Encoded"] is False


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b"\x89PNG\xff\x00", "application/json"), (b"plain ascii", "application/octet-stream")],
)
def test_a_binary_body_arrives_base64_encoded(body: bytes, content_type: str) -> None:
    event = event_for(body, content_type)

    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == body


def test_a_request_round_trips_through_the_gateway(base_url: str) -> None:
    status, headers, body = call(
        f"{base_url}/echo?session=abc",
        "POST",
        b'{"status": "CONNECTED"}',
        {"Content-Type": "application/json", "X-Custom": "yes"},
    )

    assert status == 200
    assert headers["Content-Type"] == "application/json"
    answer = json.loads(body)
    event = answer["event"]
    assert event["routeKey"] == "ANY /echo"
    assert event["requestContext"]["http"]["method"] == "POST"
    assert event["queryStringParameters"] == {"session": "abc"}
    assert event["headers"]["x-custom"] == "yes"
    assert event["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert json.loads(event["body"]) == {"status": "CONNECTED"}
    assert event["isBase64Encoded"] is False
    assert answer["function_name"] == "EchoFunction"
    assert 0 < answer["remaining_ms"] <= 15_000


def test_functions_whose_modules_share_a_name_stay_apart(base_url: str) -> None:
    echo_status, _, echo_body = call(f"{base_url}/echo")
    bare_status, _, bare_body = call(f"{base_url}/bare")

    assert (echo_status, bare_status) == (200, 200)
    assert "event" in json.loads(echo_body)
    assert json.loads(bare_body) == {"bare": True}


def test_a_return_value_without_status_code_becomes_a_200_json_body(base_url: str) -> None:
    status, headers, body = call(f"{base_url}/bare", "DELETE")

    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"bare": True}


def test_a_base64_response_is_decoded_and_its_cookies_are_set(base_url: str) -> None:
    status, headers, body = call(f"{base_url}/picture")

    assert status == 201
    assert headers["Content-Type"] == "image/png"
    assert headers.get_all("Set-Cookie") == ["a=1; Path=/", "b=2"]
    assert body == b"\x89PNG\xff"


def test_an_unknown_path_gets_the_404_envelope(base_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, body = call(f"{base_url}/nowhere?x=1", "POST", b"{}")

    assert status == 404
    assert json.loads(body) == {"success": False, "message": "no route for POST /nowhere"}
    assert "POST /nowhere 404 " in capsys.readouterr().err


def test_a_method_the_route_does_not_accept_gets_404(base_url: str) -> None:
    status, _, body = call(f"{base_url}/boom")

    assert status == 404
    assert json.loads(body)["message"] == "no route for GET /boom"


def test_a_crashing_handler_gets_500_and_its_traceback_is_logged(
    base_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, body = call(f"{base_url}/boom", "POST", b"{}")

    assert status == 500
    assert json.loads(body) == {"message": "Internal Server Error"}
    errors = capsys.readouterr().err
    assert "RuntimeError: boom" in errors
    assert "POST /boom 500 " in errors


def test_a_body_over_the_10_mib_limit_gets_413(base_url: str) -> None:
    connection = http.client.HTTPConnection(base_url.removeprefix("http://"), timeout=10)
    connection.putrequest("POST", "/echo")
    connection.putheader("Content-Length", str(gateway.MAX_BODY_BYTES + 1))
    connection.endheaders()  # the body is never sent: the gateway must answer from the header

    response = connection.getresponse()

    assert response.status == 413
    assert json.loads(response.read())["success"] is False
    connection.close()


@pytest.mark.parametrize("lengths", [["-1"], ["abc"], ["+5"], ["5_0"], ["0x10"], ["1.5"], [""], ["2", "3"]])
def test_a_content_length_that_is_not_one_non_negative_integer_gets_400_without_reaching_the_function(
    base_url: str, capsys: pytest.CaptureFixture[str], lengths: list[str]
) -> None:
    connection = http.client.HTTPConnection(base_url.removeprefix("http://"), timeout=10)
    connection.putrequest("POST", "/echo")
    for length in lengths:
        connection.putheader("Content-Length", length)
    connection.endheaders(b"{}")

    response = connection.getresponse()

    assert response.status == 400
    assert json.loads(response.read()) == {
        "success": False,
        "message": "invalid Content-Length: expected one non-negative integer",
    }
    assert response.getheader("Connection") == "close"
    assert "POST /echo 400 " in capsys.readouterr().err
    connection.close()


def test_repeated_content_length_headers_that_agree_are_one_length(base_url: str) -> None:
    connection = http.client.HTTPConnection(base_url.removeprefix("http://"), timeout=10)
    connection.putrequest("POST", "/echo")
    connection.putheader("Content-Length", "2")
    connection.putheader("Content-Length", "2")
    connection.endheaders(b"{}")

    response = connection.getresponse()

    assert response.status == 200
    assert json.loads(response.read())["event"]["body"] == "{}"
    connection.close()


def test_a_head_request_gets_headers_but_no_body(base_url: str) -> None:
    status, headers, body = call(f"{base_url}/bare", "HEAD")

    assert status == 200
    assert int(headers["Content-Length"]) > 0
    assert body == b""
