"""Helpers for the event-bus tests: SQS queues (with a dead-letter queue), EventBridge and SNS on the
moto server (the `aws` fixture), and the consumer run as an operator runs it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from io import StringIO

from django.core.management import call_command

from core.aws import aws_client

# How many receives a message gets before SQS moves it to the dead-letter queue, in these tests.
MAX_RECEIVES = 2


@dataclass
class Queue:
    url: str
    arn: str
    dlq_url: str

    def send(self, body) -> str:
        """Put a message on the queue as a producer would; returns its SQS MessageId."""
        text = body if isinstance(body, str) else json.dumps(body)
        return aws_client("sqs").send_message(QueueUrl=self.url, MessageBody=text)["MessageId"]

    def peek(self) -> list[dict]:
        """The messages visible now, received with a visibility timeout of 0 (they stay visible)."""
        response = aws_client("sqs").receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=0
        )
        return response.get("Messages", [])

    def count(self, url: str | None = None) -> int:
        """Messages in the queue (visible or not): `ApproximateNumberOfMessages` + not visible."""
        attributes = aws_client("sqs").get_queue_attributes(QueueUrl=url or self.url, AttributeNames=["All"])
        values = attributes["Attributes"]
        return int(values["ApproximateNumberOfMessages"]) + int(
            values["ApproximateNumberOfMessagesNotVisible"]
        )

    def dead_letters(self) -> list[dict]:
        response = aws_client("sqs").receive_message(
            QueueUrl=self.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=0
        )
        return response.get("Messages", [])


def usage_queue(name: str = "usage") -> Queue:
    """A queue whose redrive policy moves a message to `<name>-dlq` after MAX_RECEIVES receives."""
    sqs = aws_client("sqs")
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVES)})
    url = sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": redrive})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return Queue(url=url, arn=arn, dlq_url=dlq_url)


def consume(url: str, meter: str = "api_calls", *args: str) -> tuple[str, str]:
    """Run `consume_usage_queue` without long polling; return (stdout, stderr)."""
    out, err = StringIO(), StringIO()
    call_command("consume_usage_queue", url, "--meter", meter, "--wait", "0", *args, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue().strip()


def summary(*, received: int, processed: int = 0, duplicates: int = 0, failed: int = 0) -> str:
    return (
        f"received {received}, processed {processed}, duplicates {duplicates}, "
        f"failed {failed} (left in the queue)"
    )
