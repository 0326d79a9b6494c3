"""One cold request through the real handler, as a fresh Lambda container serves it.

Usage: python bench/cold_child.py <function> <message_id>

Imports the function the way the Lambda runtime does (`import app` with the function's directory and the
layer on sys.path), answers events/messages_received/text.json under a fresh message id, and prints
RESPONSE_MARK + the status. Nothing of the bench is imported: the parent times this whole process, from
spawn to that line, and everything in it is what a container pays.
"""

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
function, message_id = sys.argv[1], sys.argv[2]
sys.path[:0] = [str(REPO / "functions" / function), str(REPO / "shared")]

import app  # noqa: E402  (the function module, as Lambda imports it)


class Context:
    function_name = function_version = aws_request_id = log_group_name = log_stream_name = "bench"
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:bench"
    memory_limit_in_mb = 512

    def get_remaining_time_in_millis(self) -> int:
        return 15_000


event = json.loads((REPO / "events" / "messages_received" / "text.json").read_text())
body = json.loads(event["body"])
body["message_id"] = message_id
event["body"] = json.dumps(body, ensure_ascii=False)
response = app.lambda_handler(event, Context())
duplicate = json.loads(response["body"]).get("data", {}).get("duplicate")
print(f"\n@@bench-response {response['statusCode']} duplicate={duplicate}", flush=True)
