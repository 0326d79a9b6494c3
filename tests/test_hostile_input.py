"""No hostile request makes an endpoint answer 5xx (property-based, with Hypothesis).

Each endpoint gets generated API Gateway v2 events through its real Lambda handler
and a real Postgres, on the direct psycopg backend and on supabase-py through the
PostgREST stand-in: wrong types for every field, missing and extra fields, huge and
negative numbers, ports outside 0-65535, invalid UUIDs, deep nesting, very long
strings (compressible and not), emoji, right-to-left text, NUL, lone surrogates
written as JSON escapes in the raw body, invalid UTF-8 sent base64-encoded (as API
Gateway sends binary), empty bodies, wrong content types, odd headers and, mostly,
the valid sample bodies of events/ with up to three fields or nested fields
replaced, removed or added: those are the requests that reach the database.

Properties, for every generated request:

- the answer is 2xx or 4xx, never 5xx, in the envelope {success, message, data?},
  success true exactly for 2xx;
- the body shows no internals: no "Traceback", "psycopg", "select ", "SQLSTATE" or
  path of our code, unless the request itself carried that text (a 200 echoes what
  was stored, and some 400s name what was wrong);
- a 200 from messages/received stored the message it was sent: the row's content,
  read back from the database, equals the sent message with the documented rule
  applied (U+0000 and unpaired surrogates become U+FFFD; numbers are compared by
  value, at the double precision the service parses them with), and its body, type
  and message id match;
- a 200 from status-update or qr-update stored exactly the fields sent and left the
  others as they were.

The database is reset to the seed before every example, so each starts alike.
Below those: a property on the authentication headers with a signing key set (401,
never 5xx), a sweep of every field of every sample missing or with every wrong
type, and the regression tests of what the properties found (failing until fixed).

Environment (read at import):

  HYPOTHESIS_EXAMPLES           examples per endpoint on the direct Postgres backend
                                (default 1000; e.g. 20000 for a nightly or manual run)
  HYPOTHESIS_SUPABASE_EXAMPLES  examples per endpoint through supabase-py and the
                                PostgREST stand-in, ~5x slower per request
                                (default HYPOTHESIS_EXAMPLES / 5)
  HYPOTHESIS_BACKENDS           comma-separated subset of "postgres,supabase" (default both)
  HYPOTHESIS_RANDOM=1           a fresh random seed each run, failing examples kept in
                                .hypothesis/examples (gitignored) and replayed first. The
                                default is derandomized: the same examples every run and
                                no example database.

Run: .venv/bin/python -m pytest -p no:cacheprovider tests/test_hostile_input.py -q
(add --hypothesis-show-statistics for the spread of status codes per property).
"""

# ruff: noqa: RUF001  (look-alike characters are the point here)
from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from conftest import REPO, SAMPLE_TOKEN, SERVICE_KEY, SESSION_ID, event_body, load_event, use_backend
from hypothesis import HealthCheck, currently_in_test_context, given, note, settings
from hypothesis import event as label
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from psycopg.rows import dict_row

from local import database, gateway
from whatsapp_ingest.config import settings as service_settings
from whatsapp_ingest.models import parse_timestamp

# ---------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------

EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "1000"))
SUPABASE_EXAMPLES = int(os.environ.get("HYPOTHESIS_SUPABASE_EXAMPLES", str(max(1, EXAMPLES // 5))))
BACKENDS = {name.strip() for name in os.environ.get("HYPOTHESIS_BACKENDS", "postgres,supabase").split(",")}
RANDOM = os.environ.get("HYPOTHESIS_RANDOM", "") == "1"


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=not RANDOM,
        database=DirectoryBasedExampleDatabase(REPO / ".hypothesis" / "examples") if RANDOM else None,
        print_blob=RANDOM,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.filter_too_much,
        ],
    )


ON_POSTGRES = _settings(EXAMPLES)
ON_SUPABASE = _settings(SUPABASE_EXAMPLES)
postgres_only = pytest.mark.skipif("postgres" not in BACKENDS, reason="HYPOTHESIS_BACKENDS leaves out postgres")
supabase_only = pytest.mark.skipif("supabase" not in BACKENDS, reason="HYPOTHESIS_BACKENDS leaves out supabase")

EVENT = {
    "status_update": "status_update/valid",
    "messages_received": "messages_received/text",
    "qr_update": "qr_update/valid",
}
SAMPLES = {
    "status_update": [event_body("status_update/valid"), event_body("status_update/clear_server_port")],
    "messages_received": [
        event_body(f"messages_received/{name}")
        for name in (
            "text",
            "image",
            "video",
            "audio",
            "document",
            "location",
            "contact",
            "sticker",
            "from_linked_phone",
            "jid_with_device_epoch_ms",
            "lid_sender",
        )
    ],
    "qr_update": [event_body("qr_update/valid")],
}
MESSAGES = [body["message"] for body in SAMPLES["messages_received"]]
MEDIA = {"image", "video", "audio", "document", "sticker"}
SEEDED = {"phone_number": "+5215500000001", "whatsapp_user_id": "5215500000001@s.whatsapp.net"}
SIGNING_KEY = "hostile-input-signing-key-0123456789"

RESET_SQL = (
    "delete from public.mensajes; delete from public.chats; delete from public.contacts;"
    " delete from public.whatsapp_sessions; " + database.SEED_SQL.read_text()
)

# Internals that must never reach a response (lower case), unless the request carried them.
FORBIDDEN = [
    "traceback",
    "psycopg",
    "select ",
    "sqlstate",
    'file "',
    '.py"',
    ".py:",
    "site-packages",
    "/opt/python",
    "/var/task",
    "/var/runtime",
    "/usr/lib/python",
    str(REPO).lower(),
]

# ---------------------------------------------------------------------------
# The documented storage rule, and what the service parsed
# ---------------------------------------------------------------------------

_SURROGATE = re.compile("[\ud800-\udfff]")


def storable(value: Any) -> Any:
    """docs/orchestrator.md: U+0000 and unpaired surrogates become U+FFFD, anywhere; all else as sent."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value.replace("\x00", "\ufffd"))
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    return value


def by_value(text: str) -> Any:
    """JSON with every number a Decimal, so 1e300 equals 1000...0 (how jsonb spells it)."""
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def received_text(event: dict[str, Any]) -> str | None:
    """The body as the service decodes it; None when it is not base64 or not UTF-8."""
    raw = event.get("body") or ""
    try:
        data = base64.b64decode(raw, validate=True) if event.get("isBase64Encoded") and raw else raw
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogatepass")
        return data.decode("utf-8")
    except ValueError:
        return None


def received_json(event: dict[str, Any]) -> Any:
    """The JSON value the service parsed (a 200 implies there was one)."""
    text = received_text(event)
    return None if text is None else json.loads(text)


def request_text(event: dict[str, Any]) -> str:
    """Everything the client sent, decoded every way, to tell reflection from a leak."""
    raw = event.get("body") or ""
    parts = [raw, json.dumps(event.get("headers") or {}, ensure_ascii=False)]
    if event.get("isBase64Encoded"):
        with contextlib.suppress(ValueError):
            parts.append(base64.b64decode(raw).decode("utf-8", "replace"))
    text = received_text(event)
    if text is not None:
        with contextlib.suppress(ValueError):
            parts.append(json.dumps(json.loads(text), ensure_ascii=False))
    return "\n".join(parts).lower()


# ---------------------------------------------------------------------------
# Strategies: hostile values
# ---------------------------------------------------------------------------


def weighted(*options: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Like one_of, with the given weights (one_of's own spread is far from even)."""
    total = sum(weight for weight, _ in options)

    @st.composite
    def pick(draw: st.DrawFn) -> Any:
        n = draw(st.integers(0, total - 1))
        for weight, strategy in options:
            if n < weight:
                return draw(strategy)
            n -= weight
        raise AssertionError("unreachable")

    return pick()


PIECES = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\x00" * 3,
    "\x01\x1f\x7f\x80\x9f",
    "\n\r\t",
    "\u2028\u2029",
    "مرحبا بك",
    "שלום עולם",
    "\u202eevil\u202c",
    "\u200f\u200e",
    "\u061c",
    "👋🏽",
    "👨\u200d👩\u200d👧\u200d👦",
    "🏳️\u200d🌈",
    "🇲🇽",
    "e\u0301\u0301\u0301",
    "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇",
    "\ufeff",
    "\ufffd",
    "\ufffe",
    "\uffff",
    "\U0010ffff",
    "\U000e0001",
    "𝕳𝖊𝖑𝖑𝖔",
    "'; select pg_sleep(5); --",
    "' or '1'='1",
    "\\",
    '"',
    "\\u0000",
    "\\ud800",
    "%s %(x)s {0} $1 ?",
    "../../etc/passwd",
    "null",
    "true",
    "NaN",
    "1e309",
    "<script>alert(1)</script>",
    "${jndi:x}",
]
NOISE = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZéßøЖждاإ中文字😀🙃\u202e\x00\ud800"


WIDE = "😀🙃👋🏽𝕳𝖊𝖑𝖔🀄🂡𐍈𠜎𠜱𠝹"  # four bytes each in UTF-8


def noise(seed: int, count: int, alphabet: str = NOISE) -> str:
    """`count` characters that do not compress (a seed keeps Hypothesis's draw small)."""
    return "".join(random.Random(seed).choices(alphabet, k=count))


def near(*limits: int) -> st.SearchStrategy[str]:
    """Strings just under, at and over a length limit, in one- and four-byte characters."""
    return st.builds(
        lambda seed, count, alphabet: noise(seed, count, alphabet),
        st.integers(0, 2**32),
        st.sampled_from([n + d for n in limits for d in (-1, 0, 1)]),
        st.sampled_from([NOISE, WIDE, "x"]),
    )


SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)
ANY_CHAR = st.characters(codec=None, categories=None)  # every code point, surrogates included

short_strings = st.one_of(
    st.text(max_size=30),
    st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=4), SURROGATES), max_size=6).map("".join),
    st.text(alphabet=ANY_CHAR, max_size=12),
)
long_strings = st.one_of(
    st.builds(
        lambda unit, count: unit * count,
        st.sampled_from(["x", "é", "😀", "ا", "\x00", "\ud800", "a\udc00", "👨\u200d👩\u200d👧", "مرحبا "]),
        st.integers(1_000, 300_000),
    ),
    # incompressible: Postgres compresses long repetitive values, not these
    st.builds(lambda seed, count: noise(seed, count), st.integers(0, 2**32), st.integers(1_000, 100_000)),
)
hostile_strings = st.one_of(short_strings, short_strings, short_strings, long_strings)

huge_ints = st.sampled_from(
    [
        -1,
        65536,
        -65536,
        2**31 - 1,
        2**31,
        -(2**31) - 1,
        2**53 + 1,
        2**63,
        -(2**63) - 1,
        2**64,
        10**100,
        -(10**300),
        10**4000,
    ]
)
ints = st.one_of(st.integers(), st.integers(-(10**40), 10**40), huge_ints)
floats = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e308, -1e308, 1.7976931348623157e308, 5e-324, -0.0, 0.1, 1e-7, 2.5e15, 1e16 + 1]),
    st.floats(),  # NaN and Infinity: json.dumps writes them, which is not JSON
)
scalars = st.one_of(st.none(), st.booleans(), ints, floats, hostile_strings)


def _nest(depth: int, kind: str, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


deep = st.builds(
    _nest, st.integers(1, 300), st.sampled_from(["list", "dict"]), st.none() | st.integers() | short_strings
)
containers = st.recursive(
    st.one_of(st.none(), st.booleans(), ints, floats, short_strings),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(short_strings, inner, max_size=4),
    max_leaves=12,
)
hostile_values = st.one_of(scalars, scalars, containers, deep)

# ---------------------------------------------------------------------------
# Strategies: values of the right kind for a field, most of them odd but valid
# ---------------------------------------------------------------------------

uuids = st.one_of(
    st.just(SESSION_ID),
    st.sampled_from(
        [
            SESSION_ID.upper(),
            SESSION_ID.replace("-", ""),
            "{" + SESSION_ID + "}",
            "urn:uuid:" + SESSION_ID,
            SESSION_ID + "\x00",
            " " + SESSION_ID,
            SESSION_ID[:-1],
            SESSION_ID + "0",
            SESSION_ID.replace("-", "_"),
            SESSION_ID[:-1] + "Z",
            "٣" + SESSION_ID[1:],
            "00000000-0000-0000-0000-000000000000",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
            "",
            "null",
            SESSION_ID + "\ud800",
        ]
    ),
    st.uuids().map(str),
    hostile_strings,
)


def _iso(moment: datetime, offset_minutes: int | None, fmt: int) -> str:
    if offset_minutes is not None:
        moment = moment.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    text = moment.isoformat()
    return [text, text.replace("+00:00", "Z"), text.replace("T", " "), text.replace("-", "", 2)][fmt]


timestamps = st.one_of(
    st.sampled_from(
        [
            "2026-11-28T04:41:00Z",
            "2026-11-28T04:41:00+14:00",
            "2026-11-28T04:41:00-23:59",
            "2026-11-28",
            "2026-11-28T04:41:00.123456789Z",
            "20261128T044100Z",
            "2026-W48-5",
            "0001-01-01T00:00:00Z",
            "0001-01-01T00:00:00+01:00",
            "0001-01-01T00:00:00-01:00",
            "9999-12-31T23:59:59.999999Z",
            "9999-12-31T23:59:59.999999-01:00",
            "2026-02-30T00:00:00Z",
            "2026-11-28T24:00:00Z",
            "",
            " ",
            "now",
            "١٧٩٥٨٤٠٨٦٠",
            "1795840860",
            "1795840860123",
            "1795840860.5",
            "-1",
            "1e10",
            " 1795840860 ",
            "99999999999999999999",
            "9" * 400,
            "0",
            "0.0000001",
            "253402300799",
            "253402300800",
            "253402300799999",
        ]
    ),
    st.builds(_iso, st.datetimes(), st.none() | st.integers(-1439, 1439), st.integers(0, 3)),
    st.integers(-(10**20), 10**20),
    st.integers(0, 253402300799999),
    st.floats(min_value=0, max_value=3e14),
    st.integers(0, 253402300799999).map(str),
    hostile_values,
)

wa_servers = st.sampled_from(
    ["s.whatsapp.net", "c.us", "lid", "g.us", "broadcast", "newsletter", "S.WhatsApp.NET", "example.com"]
)
wa_users = st.one_of(
    st.text(alphabet="0123456789", min_size=1, max_size=20),
    st.text(min_size=1, max_size=30),
    st.builds(lambda unit, count: unit * count, st.sampled_from(["9", "x", "é", "😀", "ا"]), st.integers(100, 20_000)),
    st.builds(
        lambda seed, count: noise(seed, count).replace("@", "").replace(":", ""),
        st.integers(0, 2**32),
        st.integers(100, 5_000),
    ),
)
limit_jids = st.builds(  # whatsapp_user_id may have 256 characters
    lambda seed, count, server: noise(seed, count - len(server) - 1, WIDE) + "@" + server,
    st.integers(0, 2**32),
    st.sampled_from([64, 255, 256, 257]),
    st.sampled_from(["lid", "g.us"]),
)
long_jids = st.builds(
    lambda seed, count, server: noise(seed, count).replace("@", "").replace(":", "") + "@" + server,
    st.integers(0, 2**32),
    st.integers(1_500, 6_000),
    st.sampled_from(["lid", "g.us", "broadcast", "newsletter", "s.whatsapp.net"]),
)
wa_ids = weighted(
    (
        25,
        st.sampled_from(
            [
                "+52 1 55 1234 5678",
                "5215512345678",
                "5215500000001",
                "+52 1 55 0000 0001",
                "5215500000001@s.whatsapp.net",
                "5215512345678:99@c.us",
                "123@lid",
                "120363025246125486@g.us",
                "status@broadcast",
                "1234@newsletter",
                "٥٢١٥٥١٢٣٤٥٦٧٨",
                "５２１５５１２３４５６７８",
                "+52 (1) 55-1234-5678",
                "12345",
                "1234",
                "1234567890123456",
                "@lid",
                ":1@lid",
                "a@LID",
                "5215512345678@S.WHATSAPP.NET",
                "5215512345678@s.whatsapp.net\n",
                "+",
                "()",
            ]
        ),
    ),
    (10, st.text(alphabet="0123456789 +-().", min_size=1, max_size=40)),
    (
        20,
        st.builds(
            lambda user, device, server: f"{user}{device}@{server}",
            wa_users,
            st.sampled_from(["", ":0", ":12", ":99999999999999999999", ":x"]),
            wa_servers,
        ),
    ),
    (15, long_jids),
    (5, limit_jids),
    (25, hostile_strings),
)

ports = weighted(
    (25, st.integers(-70_000, 140_000)),
    (25, st.integers(0, 65535)),
    (
        30,
        st.sampled_from(
            [
                0,
                65535,
                -1,
                65536,
                2**31,
                2**63,
                -(2**63),
                10**40,
                3101.0,
                3101.5,
                "3101",
                " 3101 ",
                "3_101",
                "0",
                "0x0c1d",
                True,
                False,
                None,
                1e300,
            ]
        ),
    ),
    (20, hostile_values),
)
coordinates = st.one_of(
    st.floats(),
    st.integers(-200, 200),
    st.floats(-180, 180),
    st.sampled_from([90, -90, 180, -180, 90.0000001, -180.0000001, 1e308, 10**400, "19.4", True, None]),
    hostile_values,
)
message_types = st.one_of(
    st.sampled_from(["text", "image", "video", "audio", "document", "location", "contact", "sticker"]),
    st.sampled_from(["TEXT", "", "reaction", "text\x00", "poll"]),
    hostile_values,
)
messages = st.one_of(
    # a payload of one sample under the type of another: mostly mismatches
    st.builds(
        lambda a, b: {**copy.deepcopy(b), "type": a["type"]}, st.sampled_from(MESSAGES), st.sampled_from(MESSAGES)
    ),
    st.builds(
        lambda kind, payload: {"type": kind, kind: payload},
        message_types.filter(lambda t: isinstance(t, str)),
        hostile_values,
    ),
    hostile_values,
)

WA_ID_FIELDS = {"from", "to", "phone_number", "whatsapp_user_id"}
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "session_id": uuids,
    "status": st.one_of(
        st.sampled_from(
            ["connected", "disconnected", "expired", "pending", "CONNECTED", " connected", "connected\x00"]
        ),
        hostile_values,
    ),
    "last_seen": timestamps,
    "timestamp": timestamps,
    "phone_number": wa_ids,
    "whatsapp_user_id": wa_ids,
    "from": wa_ids,
    "to": wa_ids,
    "server_port": ports,
    "latitude": coordinates,
    "longitude": coordinates,
    "type": message_types,
    "message": messages,
    "message_id": st.one_of(near(512), hostile_strings),
    "auth_folder_path": st.one_of(near(4096), hostile_strings),
    "qr_code": st.one_of(near(1, 2**16), hostile_strings),
}

# ---------------------------------------------------------------------------
# Strategies: whole requests
# ---------------------------------------------------------------------------


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key and index in a JSON value, nested ones included."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield (*prefix, key)
        yield from paths(child, (*prefix, key))


def at(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


@st.composite
def mutated(draw: st.DrawFn, endpoint: str) -> Any:
    """A valid sample with up to three fields replaced (by an odd value of their kind,
    or by anything), removed, or joined by an extra field."""
    body = copy.deepcopy(draw(st.sampled_from(SAMPLES[endpoint])))
    for _ in range(draw(st.integers(0, 3))):
        if not isinstance(body, dict):
            break
        candidates = list(paths(body))
        if not candidates:
            body[draw(short_strings)] = draw(hostile_values)
            continue
        # half the time one of the fields the service validates and normalises
        known = [p for p in candidates if p[-1] in FIELD_VALUES]
        use_known: bool = bool(known) and draw(st.booleans())
        path = draw(st.sampled_from(known if use_known else candidates))
        parent, key = at(body, path[:-1]), path[-1]
        action = draw(st.integers(0, 99))
        name = key if isinstance(key, str) else ""
        if action < 45:
            parent[key] = draw(FIELD_VALUES.get(name, hostile_strings))
        elif action < 55:  # long, and for WhatsApp ids still well-formed
            parent[key] = draw(long_jids if name in WA_ID_FIELDS else long_strings)
        elif action < 75:
            parent[key] = draw(hostile_values)
        elif action < 87:
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(short_strings)] = draw(hostile_values)
        else:
            parent.append(draw(hostile_values))
    return body


MARK = "@@HOSTILE@@"
RAW_ESCAPES = [
    "\\ud800",
    "\\udfff",
    "\\uDBFF",
    "\\udc00\\ud800",
    "\\ud800\\ud800",
    "\\ud83d\\ude00",
    "\\ud83d",
    "\\ude00x",
    "\\u0000",
    "\\u0000\\ud800",
    "\\ud800\\u0000",
    "\\uD800\\u0041",
    "\\x00",
    "\\u12",
    "\\uzzzz",
    "\\",
    "\\'",
    "\x00",
    "\n",
    "\t",
    "\x7f",
    "\u2028",
    '"',
    "\\U0001F600",
    "\\/",
    "\\b\\f\\n\\r\\t",
]
RAW_SNIPPETS = [
    "9" * 5000,
    "1" + "0" * 400,
    "-" + "9" * 4300,
    "1e400",
    "-1e400",
    "1e-400",
    "0." + "0" * 400 + "1",
    "NaN",
    "-Infinity",
    "Infinity",
    "1.5e308",
    "-0",
    "01",
    "1.",
    ".5",
    "+1",
    "0x10",
    "true",
    "null",
    "[]",
    "{}",
    "[" * 200,
    "]" * 3,
    "}",
    "{",
    ",",
    ":",
    '"',
    "\x00",
    "\ufeff",
    "\ud800",
    "//",
    "/*",
    "undefined",
]
CONTENT_TYPES = [
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    "application/vnd.orchestrator+json",
    "application/json;",
    " application/json ",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "text/json",
    "application/jsonp",
    "json",
    "*/*",
    "",
    ";",
    "application/json\x00",
    "application/json; charset=latin-1",
    "application/" + "x" * 5000,
    "ⓐpplication/json",
]
# Header values are text API Gateway decoded from bytes: anything but lone surrogates
# (test_regression_authorization_header_with_a_lone_surrogate covers those).
header_strings = short_strings.map(lambda text: _SURROGATE.sub("?", text))
authorizations = st.one_of(
    st.sampled_from(
        ["", "Bearer", "Bearer ", "bearer x", "Basic dXNlcjpwYXNz", "Bearer \x00", "Bearer " + "x" * 10_000]
    ),
    header_strings.map(lambda text: "Bearer " + text),
    header_strings,
)
INVALID_UTF8 = [
    b"\xff",
    b"\xfe\xff",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xc0\xaf",
    b"\xf4\x90\x80\x80",
    b"\x80",
    b"\xe2\x82",
    b"\xf0\x9f\x98",
]


@st.composite
def requests(draw: st.DrawFn, endpoint: str) -> dict[str, Any]:
    """An API Gateway v2 event for `endpoint` carrying a hostile request."""
    event = load_event(EVENT[endpoint])
    shape = draw(st.integers(0, 99))
    body = draw(mutated(endpoint)) if shape < 90 else draw(hostile_values) if shape < 96 else draw(deep)

    # Raw text: sometimes with an escape or a literal spliced into a string value.
    splice = draw(st.integers(0, 99)) >= 80
    strings = [p for p in paths(body) if isinstance(at(body, p), str)] if splice else []
    if strings:
        path = draw(st.sampled_from(strings))
        value = at(body, path)
        cut = draw(st.integers(0, len(value)))
        at(body, path[:-1])[path[-1]] = value[:cut] + MARK + value[cut:]
    try:
        text = json.dumps(body, ensure_ascii=draw(st.booleans()))
    except ValueError:  # an int of more than 4300 digits: send it as text instead
        text = "{}"
    if strings:
        text = text.replace(MARK, draw(st.sampled_from(RAW_ESCAPES)), 1)

    # Raw text: sometimes cut, or with a snippet inserted anywhere.
    edit = draw(st.integers(0, 99))
    if edit < 83:
        pass
    elif edit < 88:
        text = text[: draw(st.integers(0, len(text)))]
    elif edit < 95:
        where = draw(st.integers(0, len(text)))
        text = text[:where] + draw(st.sampled_from(RAW_SNIPPETS) | short_strings) + text[where:]
    elif edit < 98 and text.endswith("}") and len(text) > 2:
        key = draw(st.sampled_from([*(body if isinstance(body, dict) else ["x"]), "session_id"]))
        text = text[:-1] + f", {json.dumps(key)}: {draw(st.sampled_from(RAW_SNIPPETS[:20]))}}}"
    else:
        text = draw(st.sampled_from(["", " ", "\n\t ", "\ufeff{}", "null", "[]", '"x"', "0", "{", "{}"]))

    # Transport: as text (most), base64 as API Gateway sends binary, or broken.
    transport = draw(st.integers(0, 99))
    if transport < 75:
        event["body"], event["isBase64Encoded"] = text, False
    else:
        data = text.encode("utf-8", "surrogatepass")
        if transport < 83:
            pass  # valid UTF-8 (unless the text holds a raw surrogate)
        elif transport < 92:
            where = draw(st.integers(0, len(data)))
            data = data[:where] + draw(st.sampled_from(INVALID_UTF8)) + data[where:]
        elif transport < 96:
            data = text.encode(draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32", "latin-1", "cp1252"])), "replace")
        else:
            data = draw(st.binary(max_size=64))
        encoded = base64.b64encode(data).decode()
        mangle = draw(st.integers(0, 99))
        if mangle >= 98:
            encoded = base64.urlsafe_b64encode(data).decode().rstrip("=")
        elif mangle >= 94:
            encoded = encoded[: draw(st.integers(0, len(encoded)))] + draw(st.sampled_from(["!", "\n", " ", "=", "é"]))
        event["body"], event["isBase64Encoded"] = encoded, True
    if draw(st.integers(0, 99)) >= 98:
        event["body"] = None

    header = draw(st.integers(0, 99))
    if header >= 98:
        del event["headers"]["content-type"]
    elif header >= 90:
        event["headers"]["content-type"] = draw(st.sampled_from(CONTENT_TYPES))
    extras = draw(st.integers(0, 99))
    if extras >= 97:  # the Authorization header itself
        event["headers"]["authorization"] = draw(authorizations)
    elif extras >= 94:  # query strings, cookies and other headers nobody reads
        values = st.dictionaries(header_strings, header_strings, max_size=3)
        query = draw(values)
        event["queryStringParameters"] = query
        event["rawQueryString"] = "&".join(f"{k}={v}" for k, v in query.items())
        event["cookies"] = draw(st.lists(header_strings, max_size=3))
        event["headers"].update(draw(values))
    if draw(st.integers(0, 99)) >= 98:
        event["requestContext"]["http"]["method"] = draw(
            st.sampled_from(["GET", "PUT", "DELETE", "OPTIONS", "post", ""])
        )
    return event


# ---------------------------------------------------------------------------
# Fixtures: one backend switch for the module (function-scoped fixtures and
# Hypothesis do not mix: they would not be reset between examples)
# ---------------------------------------------------------------------------

Switch = Callable[..., None]


@pytest.fixture(scope="module")
def switch(database_url: str) -> Iterator[Switch]:
    """switch('postgres') or switch('supabase', standin): point the service at a backend.

    Cheap when the backend does not change, so every example calls it.
    """
    current: list[str] = []
    with pytest.MonkeyPatch.context() as patch:

        def to(name: str, standin: Any = None) -> None:
            if current == [name]:
                return
            if name == "supabase":
                use_backend(patch, {"SUPABASE_URL": standin.url, "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY})
            else:
                use_backend(patch, {"DATABASE_URL": database_url})
            current[:] = [name]

        yield to
    with pytest.MonkeyPatch.context() as patch:
        use_backend(patch, {})  # drops the cached store and settings; the environment is back on exit


@pytest.fixture(scope="module")
def conn(database_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as connection:
        yield connection


def send(
    handlers: dict[str, gateway.Handler], conn: Any, event: dict[str, Any], *, reset: bool = True
) -> tuple[int, dict[str, Any]]:
    """Call the handler on a freshly seeded database and check the envelope: (status, body)."""
    if reset:
        conn.execute(RESET_SQL)
    response = handlers[event["rawPath"]](event, gateway.LambdaContext("hostile"))
    status = int(response["statusCode"])
    text = response["body"]
    if currently_in_test_context():
        note(f"status {status}: {text[:2000]}")
        label(f"status {status}")

    assert 200 <= status < 300 or 400 <= status < 500, f"{status}: {text[:2000]}"
    payload = json.loads(text)
    assert isinstance(payload, dict), text[:2000]
    assert {"success", "message"} <= set(payload) <= {"success", "message", "data"}, text[:2000]
    assert payload["success"] is (status < 300)
    assert isinstance(payload["message"], str)
    lower, sent = text.lower(), request_text(event)
    leaked = [token for token in FORBIDDEN if token in lower and token not in sent]
    assert not leaked, f"{leaked} in {text[:2000]}"
    return status, payload


def session_row(conn: Any) -> dict[str, Any]:
    row: dict[str, Any] = conn.execute("select * from public.whatsapp_sessions where id = %s", (SESSION_ID,)).fetchone()
    return row


def check_status_update(handlers: Any, conn: Any, sent: dict[str, Any]) -> None:
    status, payload = send(handlers, conn, sent)
    if status != 200:
        return
    body = storable(received_json(sent))
    row = session_row(conn)
    assert payload["data"]["id"] == SESSION_ID
    assert row["status"] == body["status"]
    for field in ("phone_number", "whatsapp_user_id", "auth_folder_path"):
        expected = body[field] if body.get(field) is not None else SEEDED.get(field)
        assert row[field] == expected, field
    if body.get("last_seen") is not None:
        assert row["last_seen"] == parse_timestamp(body["last_seen"])
    else:
        assert row["last_seen"] is None
    if "server_port" in body:
        port = body["server_port"]
        # A JSON number is its value (3101.0 is 3101); a string or a boolean is no port.
        assert not isinstance(port, str | bool), f"server_port {port!r} was stored as {row['server_port']!r}"
        assert row["server_port"] == port
    else:
        assert row["server_port"] is None


def check_messages_received(handlers: Any, conn: Any, sent: dict[str, Any]) -> None:
    status, payload = send(handlers, conn, sent)
    if status != 200:
        return
    body = storable(received_json(sent))
    data = payload["data"]
    assert data["duplicate"] is False
    row = conn.execute(
        "select content::text as content, body, message_type, whatsapp_message_id from public.mensajes where id = %s",
        (data["message"]["id"],),
    ).fetchone()
    message = body["message"]
    assert by_value(row["content"]) == by_value(json.dumps(message)), "stored content differs from the message sent"
    kind = message["type"]
    expected_text = message["text"] if kind == "text" else message[kind].get("caption") if kind in MEDIA else None
    assert row["body"] == expected_text
    assert row["message_type"] == kind
    assert row["whatsapp_message_id"] == body["message_id"]


def check_qr_update(handlers: Any, conn: Any, sent: dict[str, Any]) -> None:
    status, payload = send(handlers, conn, sent)
    if status != 200:
        return
    body = storable(received_json(sent))
    row = session_row(conn)
    assert row["status"] == "pending"
    assert row["qr_code"] == body["qr_code"] == payload["data"]["qr_code"]
    assert row["qr_url"] == body.get("qr_url")
    assert row["qr_generated_at"] == parse_timestamp(body["timestamp"])


# ---------------------------------------------------------------------------
# Properties, on the direct Postgres backend
# ---------------------------------------------------------------------------


@postgres_only
@ON_POSTGRES
@given(sent=requests("status_update"))
def test_status_update_is_never_5xx_and_stores_what_was_sent_on_postgres(
    sent: dict[str, Any], handlers: Any, switch: Switch, conn: Any
) -> None:
    switch("postgres")
    check_status_update(handlers, conn, sent)


@postgres_only
@ON_POSTGRES
@given(sent=requests("messages_received"))
def test_messages_received_is_never_5xx_and_stores_the_message_as_sent_on_postgres(
    sent: dict[str, Any], handlers: Any, switch: Switch, conn: Any
) -> None:
    switch("postgres")
    check_messages_received(handlers, conn, sent)


@postgres_only
@ON_POSTGRES
@given(sent=requests("qr_update"))
def test_qr_update_is_never_5xx_and_stores_what_was_sent_on_postgres(
    sent: dict[str, Any], handlers: Any, switch: Switch, conn: Any
) -> None:
    switch("postgres")
    check_qr_update(handlers, conn, sent)


# ---------------------------------------------------------------------------
# The same properties through supabase-py and the PostgREST stand-in
# ---------------------------------------------------------------------------


@supabase_only
@ON_SUPABASE
@given(sent=requests("status_update"))
def test_status_update_is_never_5xx_and_stores_what_was_sent_on_supabase(
    sent: dict[str, Any], handlers: Any, switch: Switch, conn: Any, postgrest: Any
) -> None:
    switch("supabase", postgrest)
    check_status_update(handlers, conn, sent)


@supabase_only
@ON_SUPABASE
@given(sent=requests("messages_received"))
def test_messages_received_is_never_5xx_and_stores_the_message_as_sent_on_supabase(
    sent: dict[str, Any], handlers: Any, switch: Switch, conn: Any, postgrest: Any
) -> None:
    switch("supabase", postgrest)
    check_messages_received(handlers, conn, sent)


@supabase_only
@ON_SUPABASE
@given(sent=requests("qr_update"))
def test_qr_update_is_never_5xx_and_stores_what_was_sent_on_supabase(
    sent: dict[str, Any], handlers: Any, switch: Switch, conn: Any, postgrest: Any
) -> None:
    switch("supabase", postgrest)
    check_qr_update(handlers, conn, sent)


# ---------------------------------------------------------------------------
# Authentication headers, with a signing key configured: 401, never 5xx
# ---------------------------------------------------------------------------

ODD_STAMPS = ["", " ", "0", "-1", "+1795841018", "1795841018.5", "1e9", "9" * 40, "0x6b0", " now", "\x00"]
ODD_STAMPS += ["²", "¹²³", "①", "١٧٩٥٨٤١٠١٨", "𝟏𝟕𝟗𝟓", "Ⅻ"]  # digits to str.isdigit(), not all to int()
timestamps_header = weighted(
    (40, st.just("now")),
    (10, st.sampled_from([-301, -300, -299, 299, 300, 301]).map(lambda offset: f"now{offset:+d}")),
    (
        25,
        st.sampled_from(ODD_STAMPS),
    ),
    (10, st.integers(-(2**70), 2**70).map(str)),
    (15, header_strings),
)
signatures = weighted(
    (50, st.just("valid")),
    (10, st.just("VALID")),  # the valid signature in upper case
    (20, st.sampled_from(["", "sha256=", "sha256=00", "md5=00", "sha256=" + "ff" * 32, "sha256=" + "é" * 64])),
    (20, header_strings),
)


@postgres_only
@ON_POSTGRES
@given(
    endpoint=st.sampled_from(list(EVENT)),
    token=weighted((70, st.just(f"Bearer {SAMPLE_TOKEN}")), (30, authorizations)),
    stamp=timestamps_header,
    signature=signatures,
)
def test_hostile_authentication_headers_are_never_5xx(
    endpoint: str, token: str, stamp: str, signature: str, handlers: Any, switch: Switch, conn: Any
) -> None:
    from whatsapp_ingest.auth import sign  # imported here: that module is young

    switch("postgres")
    event = load_event(EVENT[endpoint])
    if stamp.startswith("now"):
        stamp = str(int(time.time()) + int(stamp[3:] or 0))
    valid = sign(SIGNING_KEY, stamp, event["body"].encode())
    chosen = {"valid": valid, "VALID": valid.upper()}.get(signature, signature)
    event["headers"].update({"authorization": token, "x-timestamp": stamp, "x-signature": chosen})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIGNING_KEY", SIGNING_KEY)
        service_settings.cache_clear()
        status, _ = send(handlers, conn, event)
    service_settings.cache_clear()
    if status == 200:
        assert token.split(" ", 1)[-1].strip() == SAMPLE_TOKEN


# ---------------------------------------------------------------------------
# Every field of every sample, missing or with every wrong type
# ---------------------------------------------------------------------------

WRONG_TYPES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63,
    -(10**40),
    1.5,
    -0.0,
    1e308,
    "",
    "x",
    [],
    [1],
    {},
    {"a": 1},
    _nest(64, "list", 1),
]


@postgres_only
def test_every_field_missing_or_of_every_wrong_type_is_never_5xx(handlers: Any, switch: Switch, conn: Any) -> None:
    switch("postgres")
    conn.execute(RESET_SQL)
    sent = 0
    for endpoint, samples in SAMPLES.items():
        for sample in samples:
            for path in paths(sample):
                for value in [*WRONG_TYPES, "missing"]:
                    body = copy.deepcopy(sample)
                    if value == "missing":
                        del at(body, path[:-1])[path[-1]]
                    else:
                        at(body, path[:-1])[path[-1]] = value
                    event = load_event(EVENT[endpoint])
                    event["body"] = json.dumps(body)
                    try:
                        send(handlers, conn, event, reset=False)  # storage is the properties' business
                    except AssertionError as exc:
                        raise AssertionError(f"{endpoint} {'.'.join(map(str, path))} = {value!r}: {exc}") from None
                    sent += 1
    assert sent > 1000


# ---------------------------------------------------------------------------
# Regression tests: what the properties found (fail until fixed)
# ---------------------------------------------------------------------------

LONG_LID_USER = noise(7, 3000, "0123456789abcdefghijklmnopqrstuvwxyz")  # 3000 bytes that do not compress


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize(
    ("sender", "receiver"),
    [
        (LONG_LID_USER + "@lid", "5215500000001@s.whatsapp.net"),  # inbound from a long @lid
        ("5215500000001@s.whatsapp.net", LONG_LID_USER + "@g.us"),  # typed on the linked phone, to a long group id
    ],
    ids=["from-long-lid", "outbound-to-long-group"],
)
def test_regression_long_non_phone_jid_is_not_a_500(
    backend: str, sender: str, receiver: str, handlers: Any, switch: Switch, conn: Any, request: pytest.FixtureRequest
) -> None:
    """Found by the messages property. A non-phone JID (@lid, @g.us, @broadcast, @newsletter)
    is kept whole as contacts.wa_id, which has a unique btree index; about 2.7 kB that do
    not compress exceed its row limit: SQLSTATE 54000 (program_limit_exceeded), which
    _classify maps to StoreError, so 500 "internal error" on both backends."""
    switch(backend, request.getfixturevalue("postgrest") if backend == "supabase" else None)
    body = {**event_body("messages_received/text"), "from": sender, "to": receiver}
    event = load_event("messages_received/text")
    event["body"] = json.dumps(body)

    status, payload = send(handlers, conn, event)

    if status == 200:
        wa_id = conn.execute(
            "select wa_id from public.contacts where id = %s", (payload["data"]["contact_id"],)
        ).fetchone()
        assert wa_id["wa_id"] == LONG_LID_USER + ("@lid" if sender.endswith("@lid") else "@g.us")


@postgres_only
@pytest.mark.parametrize("port", [True, False, "3101", " 3101 ", "3_101", "3101.0"])
def test_regression_server_port_that_is_not_a_json_number_is_400(
    port: Any, handlers: Any, switch: Switch, conn: Any
) -> None:
    """Found by the status-update property: pydantic's lax int accepts booleans and
    numeric strings, so {"server_port": true} stores port 1 and "3_101" stores 3101.
    The contract types server_port number | null."""
    switch("postgres")
    event = load_event("status_update/valid")
    event["body"] = json.dumps({"session_id": SESSION_ID, "status": "connected", "server_port": port})

    status, _ = send(handlers, conn, event)

    assert status == 400
    assert session_row(conn)["server_port"] is None


@postgres_only
@pytest.mark.parametrize("stamp", ["²", "¹⁷⁹⁵⁸⁴¹⁰¹⁸", "①"])
def test_regression_x_timestamp_of_non_decimal_digits_is_401(
    stamp: str, handlers: Any, switch: Switch, conn: Any
) -> None:
    """Found by the authentication property: auth._verify_signature checks
    timestamp.isdigit(), true for superscripts and circled digits, then int(timestamp)
    raises ValueError: 500 "internal error" (with a signing key configured)."""
    switch("postgres")
    event = load_event("messages_received/text")
    event["headers"].update({"x-timestamp": stamp, "x-signature": "sha256=" + "0" * 64})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SIGNING_KEY", SIGNING_KEY)
        service_settings.cache_clear()
        status, _ = send(handlers, conn, event)
    service_settings.cache_clear()

    assert status == 401


@postgres_only
def test_regression_authorization_header_with_a_lone_surrogate_is_401(handlers: Any, switch: Switch, conn: Any) -> None:
    """Found by the properties (before header values were kept surrogate-free): auth.authenticate
    does token.strip().encode(), which raises UnicodeEncodeError on a lone surrogate: 500.
    Only reachable if an event can carry one in a header (the body path already allows
    for it: read_body encodes with surrogatepass)."""
    switch("postgres")
    event = load_event("qr_update/valid")
    event["headers"]["authorization"] = f"Bearer {SAMPLE_TOKEN}\ud800"

    status, _ = send(handlers, conn, event)

    assert status == 401
