"""Local stand-in for the HTTP API in front of the Lambdas of template.yaml.

`sam local start-api` needs Docker, which the development machines lack, so this
serves the template's HttpApi routes in-process: each request is turned into the
payload format 2.0 event API Gateway would send and handed to the real handler.

Run: .venv/bin/python -m local.gateway [--port 3000]
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import secrets
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml

from local import console

REPO = Path(__file__).resolve().parent.parent
MAX_BODY_BYTES = 10 * 1024 * 1024  # the HTTP API payload limit
TIMEOUT_MS = 15_000  # Globals.Function.Timeout
# A deployed HTTP API answers a crashed Lambda with 500 {"message": "Internal Server Error"}.
CRASH_STATUS = 500
TEXT_TYPES = {"application/json", "application/xml", "application/x-www-form-urlencoded"}

Handler = Callable[[dict[str, Any], Any], Any]
Response = tuple[int, list[tuple[str, str]], bytes]  # status, headers, payload


@dataclass(frozen=True)
class Route:
    logical_id: str
    path: str
    method: str
    code_dir: Path
    handler: str

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that reads !Ref, !Sub... as their plain operand: routing needs no intrinsics."""


def _plain(loader: yaml.SafeLoader, _suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


CfnLoader.add_multi_constructor("!", _plain)


def load_routes(template_path: Path) -> list[Route]:
    """Derive routes from the template so the gateway can never drift from what is deployed."""
    template = yaml.load(template_path.read_text(encoding="utf-8"), Loader=CfnLoader)
    defaults = (template.get("Globals") or {}).get("Function") or {}
    routes = []
    for logical_id, resource in (template.get("Resources") or {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = {**defaults, **(resource.get("Properties") or {})}
        code_dir = (template_path.parent / props["CodeUri"]).resolve()
        for event in (props.get("Events") or {}).values():
            if event.get("Type") == "HttpApi":
                spec = event["Properties"]
                method = spec["Method"].upper()
                routes.append(Route(logical_id, spec["Path"], method, code_dir, props["Handler"]))
    return routes


def path_parameters(template: str, path: str) -> dict[str, str] | None:
    """The values of a route's {name} segments when `path` matches it (API Gateway's pathParameters:
    a parameter is one non-empty segment), else None."""
    wanted, given = template.split("/"), path.split("/")
    if len(wanted) != len(given):
        return None
    parameters: dict[str, str] = {}
    for part, value in zip(wanted, given, strict=True):
        if part.startswith("{") and part.endswith("}") and value:
            parameters[part[1:-1]] = value
        elif part != value:
            return None
    return parameters


_handlers: dict[Route, Handler] = {}
_handlers_lock = threading.Lock()


def load_handler(route: Route) -> Handler:
    """Import each function's module under its own name: every function's file is app.py."""
    with _handlers_lock:
        if route not in _handlers:
            module_name, attr = route.handler.rsplit(".", 1)
            name = f"fn_{route.logical_id}"
            source = route.code_dir / f"{module_name}.py"
            spec = importlib.util.spec_from_file_location(name, source)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {route.handler} from {route.code_dir}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # dataclasses and pickling look the module up by name
            spec.loader.exec_module(module)
            _handlers[route] = getattr(module, attr)
        return _handlers[route]


def _is_text(content_type: str | None) -> bool:
    mime = (content_type or "").split(";")[0].strip().lower()
    return not mime or mime.startswith("text/") or mime in TEXT_TYPES or mime.endswith("+json")


def _join(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """API Gateway folds repeated headers and query keys into one comma-joined value."""
    joined: dict[str, str] = {}
    for key, value in pairs:
        joined[key] = f"{joined[key]},{value}" if key in joined else value
    return joined


def build_event(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: dict[str, str],
    body: bytes,
    route_key: str,
    source_ip: str,
) -> dict[str, Any]:
    """Mirror the 2.0 payload AWS sends, so handlers never meet a local-only event shape."""
    headers = _join((name.lower(), value) for name, value in headers.items())
    now = datetime.now(UTC)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
    }
    if "cookie" in headers:
        event["cookies"] = headers["cookie"].split("; ")
    event["headers"] = headers
    if raw_query:
        event["queryStringParameters"] = _join(parse_qsl(raw_query, keep_blank_values=True))
    event["requestContext"] = {
        "accountId": "000000000000",
        "apiId": "local",
        "domainName": "127.0.0.1",
        "domainPrefix": "127",
        "http": {
            "method": method,
            "path": raw_path,
            "protocol": "HTTP/1.1",
            "sourceIp": source_ip,
            "userAgent": headers.get("user-agent", ""),
        },
        "requestId": base64.b64encode(secrets.token_bytes(11)).decode(),
        "routeKey": route_key,
        "stage": "$default",
        "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
        "timeEpoch": int(now.timestamp() * 1000),
    }
    if not body:
        event["isBase64Encoded"] = False
        return event
    try:
        text = body.decode("utf-8") if _is_text(headers.get("content-type")) else None
    except UnicodeDecodeError:
        text = None
    event["body"] = text if text is not None else base64.b64encode(body).decode()
    event["isBase64Encoded"] = text is None
    return event


class LambdaContext:
    """The attributes Powertools' inject_lambda_context reads, with the deployed 15 s budget."""

    def __init__(self, function_name: str) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        arn_prefix = "arn:aws:lambda:us-east-1:000000000000:function"
        self.invoked_function_arn = f"{arn_prefix}:{function_name}"
        self.memory_limit_in_mb = 512
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        self._deadline = time.monotonic() + TIMEOUT_MS / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _to_http(result: Any) -> Response:
    """Apply API Gateway's v2 response rules, including its 200-JSON reading of a bare return."""
    if not isinstance(result, dict) or "statusCode" not in result:
        return _json(200, result)
    headers = [(k, str(v)) for k, v in (result.get("headers") or {}).items()]
    multi = result.get("multiValueHeaders") or {}
    headers += [(k, str(v)) for k, values in multi.items() for v in values]
    headers += [("Set-Cookie", c) for c in result.get("cookies") or []]
    body = result.get("body") or ""
    payload = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
    return int(result["statusCode"]), headers, payload


def _json(status: int, document: Any) -> Response:
    return status, [("Content-Type", "application/json")], json.dumps(document).encode()


def content_length(values: list[str]) -> int | None:
    """The body's length from the Content-Length headers (0 without one), or None when
    they do not state one: negative, not decimal digits (int() would take '+5' or
    '5_0'), or several that disagree."""
    stated = {value.strip() for value in values}
    if not stated:
        return 0
    if len(stated) > 1:
        return None
    (text,) = stated
    return int(text) if text.isascii() and text.isdecimal() else None


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LocalGateway

    def _serve(self) -> None:
        if console.serve(self):  # GET / and /console/...: make run's live console, never deployed
            return
        started = time.perf_counter()
        url = urlsplit(self.path)
        length = content_length(self.headers.get_all("Content-Length") or [])
        if length is None:
            self.close_connection = True  # where the body ends is unknown: nothing more can be read
            invalid = {"success": False, "message": "invalid Content-Length: expected one non-negative integer"}
            status, headers, payload = _json(400, invalid)
        elif length > MAX_BODY_BYTES:
            self.close_connection = True  # the unread body would be parsed as the next request
            too_large = {"success": False, "message": "request body over 10 MiB"}
            status, headers, payload = _json(413, too_large)
        else:
            body = self.rfile.read(length)
            status, headers, payload = self._dispatch(url.path, url.query, body)
        # Logged before replying, so the line is out by the time the client has its answer.
        elapsed_ms = (time.perf_counter() - started) * 1000
        print(f"{self.command} {url.path} {status} {elapsed_ms:.0f}ms", file=sys.stderr)
        self.send_response_only(status)
        for name, value in headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")  # the client must not send another request on it
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _dispatch(self, path: str, query: str, body: bytes) -> Response:
        matches = ((r, path_parameters(r.path, path)) for r in self.server.routes)
        found = next(((r, p) for r, p in matches if p is not None and r.method in ("ANY", self.command)), None)
        if found is None:
            return _json(404, {"success": False, "message": f"no route for {self.command} {path}"})
        route, parameters = found
        source_ip = self.client_address[0]
        pairs = [*self.headers.items(), ("X-Forwarded-For", source_ip)]  # AWS appends the peer
        headers = _join((name.lower(), value) for name, value in pairs)
        event = build_event(self.command, path, query, headers, body, route.key, source_ip)
        if parameters:
            event["pathParameters"] = parameters
        try:
            with self.server.invoke_locks[route]:
                result = load_handler(route)(event, LambdaContext(route.logical_id))
            return _to_http(result)
        except Exception:
            traceback.print_exc()
            return _json(CRASH_STATUS, {"message": "Internal Server Error"})

    def __getattr__(self, name: str) -> Any:
        # Every method reaches the routes, as with API Gateway's ANY: the handler answers 405.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)


class LocalGateway(ThreadingHTTPServer):
    """Carries the routes, so the per-request handler class needs no global state."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], routes: list[Route]) -> None:
        self.routes = routes
        # A Lambda environment runs one invocation at a time; module globals (clients,
        # connections) may rely on that, so concurrent requests to a route queue here.
        self.invoke_locks = {route: threading.Lock() for route in routes}
        super().__init__(address, _RequestHandler)


def make_server(routes: list[Route], host: str = "127.0.0.1", port: int = 3000) -> ThreadingHTTPServer:
    """Bind without serving, so tests can use port 0 and drive serve_forever themselves."""
    return LocalGateway((host, port), routes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve template.yaml's HttpApi routes locally.")
    parser.add_argument("--template", type=Path, default=REPO / "template.yaml")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "shared"))  # what the IngestLayer provides in Lambda
    routes = load_routes(args.template)
    server = make_server(routes, args.host, args.port)
    for route in routes:
        print(f"{route.key} -> {route.logical_id}")
    print(f"Listening on http://{args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
