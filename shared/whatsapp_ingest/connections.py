"""Gateway connections (docs/gateway-connections.md): the operator's command that adds one
or rotates its secret, and the credentials the service calls a session's gateway with.

A connection is a row of whatsapp_gateway_connections (no secret in it) and a
Secrets Manager secret named <CONNECTION_SECRET_PREFIX><id>:
{"gateway", "webhook_secrets": [...], "verify_tokens": [...], "api_key"}.

    python -m whatsapp_ingest.connections add --gateway waha --name "WAHA 2" \\
        --base-url https://waha-2.example.com [--account <account id>] < secrets.json

reads the secrets as JSON on stdin ({"webhook_secret", "verify_token" (Meta),
"api_key"}), never from the command line (shell history, the process list),
and prints the connection with its webhook path: never a secret.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from whatsapp_ingest.config import (
    ConfigError,
    connection_secret,
    connection_secret_name,
    forget_connection_secrets,
    parse_connection_secret,
    secrets_manager,
)
from whatsapp_ingest.store import InvalidData, get_store

GATEWAYS = ("evolution", "waha", "meta")
#: Secrets accepted at once: the new one and the one being rotated out.
MAX_WEBHOOK_SECRETS = 2


@dataclass(frozen=True)
class ConnectionCredentials:
    """What the service calls a session's gateway with (the media issue downloads through it)."""

    connection_id: UUID
    gateway: str
    #: The gateway's id of the session: Evolution instance, WAHA session, Meta phone_number_id.
    instance: str | None
    #: WAHA's or Evolution's server; None for Meta (graph.facebook.com).
    base_url: str | None
    #: WAHA's X-Api-Key, Evolution's apikey header, Meta's access token (Bearer); None if not given.
    api_key: str | None
    #: Meta's Graph API version (e.g. v21.0); None elsewhere or when not set.
    api_version: str | None

    def __repr__(self) -> str:
        return f"ConnectionCredentials({self.connection_id}, {self.gateway}, api_key=<redacted>)"


def credentials_for_session(session_id: UUID) -> ConnectionCredentials | None:
    """The credentials of the session's connection; None when the session has no connection
    (the default connection of the single-secret endpoints holds no API key).

    Raises SessionNotFound for an unknown session, ConfigError when the connection's secret is
    missing, SecretsUnavailable when Secrets Manager cannot be asked. Cached like the webhooks'.
    """
    row = get_store().session_connection(session_id)
    if not row.get("connection_id"):
        return None
    connection_id = UUID(row["connection_id"])
    secret = connection_secret(connection_id)
    if secret is None:
        raise ConfigError(f"gateway connection {connection_id} has no secret")
    return ConnectionCredentials(
        connection_id, row["gateway"], row.get("instance"), row.get("base_url"), secret.api_key, row.get("api_version")
    )


def _secret_document(gateway: str, given: dict[str, Any]) -> dict[str, Any]:
    """The Secrets Manager JSON of a connection from what the operator gave; validated as the
    service will read it, so a connection is never added with a secret it would refuse."""
    webhook = given.get("webhook_secret")
    document: dict[str, Any] = {"gateway": gateway, "webhook_secrets": [webhook] if webhook else []}
    if gateway == "meta":
        verify = given.get("verify_token")
        document["verify_tokens"] = [verify] if verify else []
    if given.get("api_key"):
        document["api_key"] = given["api_key"]
    _check(document)
    return document


def _check(document: dict[str, Any]) -> None:
    try:
        parse_connection_secret(uuid4(), document)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"the secrets are not usable: {exc}") from None
    gateway = document["gateway"]
    if gateway != "evolution" and not document["webhook_secrets"]:
        raise ConfigError(f"a {gateway} connection needs its webhook_secret")
    if gateway == "meta" and not document["verify_tokens"]:
        raise ConfigError("a meta connection needs its verify_token")


def add_connection(
    gateway: str,
    name: str,
    secrets: dict[str, Any],
    account_id: UUID | None = None,
    base_url: str | None = None,
    api_version: str | None = None,
) -> dict[str, Any]:
    """Add a connection: its secret in Secrets Manager, then its row (the secret is deleted
    again when the database refuses the row). Returns the row with its webhook_path."""
    if gateway not in GATEWAYS:
        raise ConfigError(f"gateway must be one of {', '.join(GATEWAYS)}")
    document = _secret_document(gateway, secrets)
    connection_id = uuid4()
    name_in_sm = connection_secret_name(connection_id)
    secrets_manager().create_secret(
        Name=name_in_sm,
        SecretString=json.dumps(document),
        Description=f"whatsapp-ingest gateway connection {connection_id} ({gateway})",
        Tags=[{"Key": "whatsapp-ingest:connection", "Value": str(connection_id)}],
    )
    try:
        return get_store().add_connection(connection_id, gateway, name, account_id, base_url, api_version)
    except Exception:
        secrets_manager().delete_secret(SecretId=name_in_sm, ForceDeleteWithoutRecovery=True)
        raise


def _stored(connection_id: UUID) -> dict[str, Any]:
    raw = secrets_manager().get_secret_value(SecretId=connection_secret_name(connection_id))["SecretString"]
    document: dict[str, Any] = json.loads(raw)
    return document


def _put(connection_id: UUID, document: dict[str, Any]) -> None:
    _check(document)
    secrets_manager().put_secret_value(
        SecretId=connection_secret_name(connection_id), SecretString=json.dumps(document)
    )
    forget_connection_secrets()


def rotate(connection_id: UUID, secrets: dict[str, Any]) -> None:
    """Start a rotation: the new webhook_secret (and verify_token) is accepted first, the
    previous one still too, until finish_rotation; an api_key given replaces the old one."""
    document = _stored(connection_id)
    for key, field in (("webhook_secret", "webhook_secrets"), ("verify_token", "verify_tokens")):
        if secrets.get(key):
            document[field] = [secrets[key], *document.get(field, [])][:MAX_WEBHOOK_SECRETS]
    if secrets.get("api_key"):
        document["api_key"] = secrets["api_key"]
    _put(connection_id, document)


def finish_rotation(connection_id: UUID) -> None:
    """End a rotation: only the newest webhook secret (and verify token) is accepted."""
    document = _stored(connection_id)
    for field in ("webhook_secrets", "verify_tokens"):
        if field in document:
            document[field] = document[field][:1]
    _put(connection_id, document)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m whatsapp_ingest.connections", description="Gateway connections (secrets as JSON on stdin)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="add a connection; stdin: {webhook_secret, verify_token, api_key}")
    add.add_argument("--gateway", required=True, choices=GATEWAYS)
    add.add_argument("--name", required=True)
    add.add_argument("--account", type=UUID, help="the account it serves (default: the operator's, any account)")
    add.add_argument("--base-url", help="the server's URL (WAHA, Evolution)")
    add.add_argument("--api-version", help="Meta's Graph API version, e.g. v21.0")
    for command in ("rotate", "finish-rotation"):
        sub = commands.add_parser(command)
        sub.add_argument("connection_id", type=UUID)
    args = parser.parse_args(argv)
    try:
        if args.command == "add":
            secrets = json.load(sys.stdin)
            row = add_connection(args.gateway, args.name, secrets, args.account, args.base_url, args.api_version)
            print(json.dumps(row, default=str))
        elif args.command == "rotate":
            rotate(args.connection_id, json.load(sys.stdin))
            print(json.dumps({"connection_id": str(args.connection_id), "rotation": "started"}))
        else:
            finish_rotation(args.connection_id)
            print(json.dumps({"connection_id": str(args.connection_id), "rotation": "finished"}))
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except InvalidData as exc:  # e.g. WAHA and Evolution need --base-url, Meta takes none
        print(f"error: the database refused the connection ({exc.constraint or exc.sqlstate})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
