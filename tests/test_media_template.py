"""template.yaml's media resources agree with the code: the queue dead-letters a job on
the try the worker gives up on, the DLQ has an alarm, no storage key is in the template."""

from __future__ import annotations

from typing import Any

import yaml
from conftest import REPO

from local import gateway
from whatsapp_ingest.media.worker import LEASE_SECONDS, MAX_ATTEMPTS


def template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load((REPO / "template.yaml").read_text(), Loader=gateway.CfnLoader)
    return loaded


def test_the_media_queue_dead_letters_on_the_try_the_worker_gives_up_on_and_alarms() -> None:
    resources = template()["Resources"]
    queue = resources["MediaQueue"]["Properties"]
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": "MediaDeadLetterQueue.Arn",
        "maxReceiveCount": MAX_ATTEMPTS,
    }
    function = resources["MediaFunction"]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * function["Timeout"] and function["Timeout"] < LEASE_SECONDS
    alarm = resources["MediaDeadLetterAlarm"]["Properties"]
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": "MediaDeadLetterQueue.QueueName"}]
    assert (alarm["MetricName"], alarm["Threshold"]) == ("ApproximateNumberOfMessagesVisible", 0)


def test_storage_keys_come_from_the_stages_secret_never_the_template() -> None:
    text = (REPO / "template.yaml").read_text()
    function = template()["Resources"]["MediaFunction"]["Properties"]
    assert function["Environment"]["Variables"]["STORAGE_SECRET_ARN"] == "StorageSecretArn"
    assert "STORAGE_S3_ACCESS_KEY_ID" not in text and "STORAGE_S3_SECRET_ACCESS_KEY" not in text
    assert "MEDIA_ALLOW_LOOPBACK" not in text  # make run only


def test_the_dispatcher_runs_every_minute_and_may_only_send_to_the_media_queue() -> None:
    function = template()["Resources"]["MediaDispatchFunction"]["Properties"]
    assert function["Events"]["EveryMinute"]["Properties"]["Schedule"] == "rate(1 minute)"
    (send,) = [s for s in function["Policies"][0]["Statement"] if s["Action"] == "sqs:SendMessage"]
    assert send["Resource"] == "MediaQueue.Arn"
