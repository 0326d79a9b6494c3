"""Local media storage and queue for `make run` and the tests: moto's server
stands in for Supabase Storage's S3 endpoint and for SQS (one server, both
APIs), and a thread runs the dispatcher and the real media function fed from
the local queue, as the deployed schedule and SQS event source do."""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from local.gateway import REPO, LambdaContext

BUCKET = "whatsapp-media"
QUEUE = "whatsapp-media-jobs"
#: Throwaway keys of the local endpoint (moto accepts any).
LOCAL_KEY = "local-media-key"
#: As the template's MediaQueue redrive policy: the fifth failed try dead-letters a job.
MAX_RECEIVES = 5


def start_server(host: str = "127.0.0.1", port: int = 0) -> tuple[Any, str]:
    """moto's server (S3 and SQS) on `port` (0: any free one): (server, endpoint URL)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    bound_host, bound_port = server.get_host_and_port()
    return server, f"http://{bound_host}:{bound_port}"


def prepare(endpoint: str, queue_name: str = QUEUE) -> dict[str, str]:
    """Create the bucket, the job queue and its dead-letter queue; the environment that points the
    media function, its dispatcher and the console at them."""
    import boto3

    session = boto3.Session(aws_access_key_id=LOCAL_KEY, aws_secret_access_key=LOCAL_KEY, region_name="us-east-1")
    s3 = session.client("s3", endpoint_url=endpoint)
    if BUCKET not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=BUCKET)
    sqs = session.client("sqs", endpoint_url=endpoint)
    dead = sqs.create_queue(QueueName=f"{queue_name}-dead")["QueueUrl"]
    dead_arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = f'{{"deadLetterTargetArn": "{dead_arn}", "maxReceiveCount": "{MAX_RECEIVES}"}}'
    queue = sqs.create_queue(QueueName=queue_name, Attributes={"RedrivePolicy": redrive, "VisibilityTimeout": "60"})
    return {
        "STORAGE_S3_ENDPOINT_URL": endpoint,
        "STORAGE_S3_REGION": "us-east-1",
        "STORAGE_S3_ACCESS_KEY_ID": LOCAL_KEY,
        "STORAGE_S3_SECRET_ACCESS_KEY": LOCAL_KEY,
        "MEDIA_QUEUE_URL": queue["QueueUrl"],
        "MEDIA_DEAD_LETTER_QUEUE_URL": dead,
        "AWS_ENDPOINT_URL_SQS": endpoint,
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", LOCAL_KEY),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", LOCAL_KEY),
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        # The local stand-ins (and a developer's own media server) are on loopback, over http.
        "MEDIA_ALLOW_LOOPBACK": "true",
        "MEDIA_URL_HOSTS": os.environ.get("MEDIA_URL_HOSTS", "127.0.0.1,localhost"),
    }


def media_handler() -> Callable[[dict[str, Any], Any], Any]:
    """functions/media/app.py's lambda_handler, loaded as the gateway loads the HTTP functions."""
    shared = str(REPO / "shared")
    if shared not in sys.path:
        sys.path.insert(0, shared)
    spec = importlib.util.spec_from_file_location("media_function_app", REPO / "functions" / "media" / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler: Callable[[dict[str, Any], Any], Any] = module.lambda_handler
    return handler


def sqs_event(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """An SQS event as Lambda's event source builds it from received messages."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {"ApproximateReceiveCount": m.get("Attributes", {}).get("ApproximateReceiveCount", "1")},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
            }
            for m in messages
        ]
    }


def consume_once(handler: Callable[[dict[str, Any], Any], Any], wait_seconds: int = 0) -> int:
    """Receive up to 10 jobs, run the media function on them, delete the ones it did: how many received."""
    from whatsapp_ingest.config import media_settings
    from whatsapp_ingest.retry_queue import sqs

    url = media_settings().queue_url
    received = (
        sqs()
        .receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_seconds, AttributeNames=["All"])
        .get("Messages", [])
    )
    if not received:
        return 0
    response = handler(sqs_event(received), LambdaContext("media"))
    failed = {item["itemIdentifier"] for item in response["batchItemFailures"]}
    for message in received:
        if message["MessageId"] not in failed:
            sqs().delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return len(received)


class MediaLoop(threading.Thread):
    """Dispatch pending media every `interval` seconds and run the media function on the queue."""

    def __init__(self, interval: float = 1.0) -> None:
        super().__init__(name="media", daemon=True)
        self.interval = interval
        self.stopped = threading.Event()

    def run(self) -> None:
        handler = media_handler()  # puts the layer (shared/) on the path, as Lambda does

        from whatsapp_ingest.media.queue import dispatch
        from whatsapp_ingest.store import get_store

        while not self.stopped.is_set():
            try:
                dispatch(get_store(), requeue_after=60)
                while consume_once(handler, wait_seconds=0):
                    pass
            except Exception as exc:  # the loop must outlive a bad moment (database restarting)
                print(f"media loop: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            self.stopped.wait(self.interval)
