"""Helpers for tests of several apps: an SNS topic on the moto server with a queue to read it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import boto3
from freezegun import freeze_time


@dataclass
class SnsTopic:
    """A moto SNS topic with an SQS queue subscribed to it (raw delivery off: SNS's envelope)."""

    arn: str
    queue_url: str
    sqs: Any

    def messages(self, *, at: str | None = None) -> list[dict]:
        """The envelopes delivered since the last read (read once); `at`: read at that (frozen) time,
        as moto stamps messages with the clock of the run and drops them once past the queue's
        retention period."""
        if at:
            with freeze_time(at):
                return self.messages()
        envelopes = []
        receive = {"QueueUrl": self.queue_url, "MaxNumberOfMessages": 10}
        while batch := self.sqs.receive_message(**receive).get("Messages"):
            for message in batch:
                envelopes.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return envelopes


def sns_topic(name: str, *, region: str) -> SnsTopic:
    """Create the topic `name` and a queue subscribed to it on the moto server (AWS_ENDPOINT_URL)."""
    sns = boto3.client("sns", region_name=region)
    sqs = boto3.client("sqs", region_name=region)
    arn = sns.create_topic(Name=name)["TopicArn"]
    queue_url = sqs.create_queue(QueueName=f"{name}-listener")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=attributes["Attributes"]["QueueArn"])
    return SnsTopic(arn=arn, queue_url=queue_url, sqs=sqs)
