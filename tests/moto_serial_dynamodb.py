"""Starts moto_server with DynamoDB's item operations serialised.

moto 5.2.5 serves requests on threads and its DynamoDB backend takes no lock, so two concurrent
TransactWriteItems can both pass the same ConditionCheck and the second overwrites the first.
Real DynamoDB serialises conditional writes and transactions on an item; the audit chain's
fork prevention relies on that (tests/tests/aws/adapters.rs concurrent_appends_keep_one_chain).
One lock around the item operations gives moto the same isolation; SQS and Secrets Manager
stay concurrent (SQS long polls must not block other requests).

It also gives SQS FIFO queues their documented deduplication window: a message whose
deduplication id was sent in the last 5 minutes is accepted but not delivered, whether the first
one is still queued or was already deleted. moto 5.2.5 compares only with messages still queued
(`Queue.add_message`); the queue conformance suite checks the window on every adapter.

Usage: python tests/moto_serial_dynamodb.py -H 127.0.0.1 -p PORT   (moto_server's arguments)
"""

import functools
import threading

from moto.dynamodb.models import DynamoDBBackend
from moto.server import main

_LOCK = threading.RLock()

for _name in (
    "put_item",
    "get_item",
    "query",
    "scan",
    "update_item",
    "delete_item",
    "transact_write_items",
):
    _orig = getattr(DynamoDBBackend, _name)

    def _serialised(orig):
        @functools.wraps(orig)
        def call(self, *args, **kwargs):
            with _LOCK:
                return orig(self, *args, **kwargs)

        return call

    setattr(DynamoDBBackend, _name, _serialised(_orig))

from moto.sqs.models import DEDUPLICATION_TIME_IN_SECONDS, Queue

_add_message = Queue.add_message


def _add_message_within_window(self, message):
    dedupe = message.deduplication_id
    if self.fifo_queue and dedupe:
        with _LOCK:
            seen = self.__dict__.setdefault("_dedupe_sent_at", {})
            now = message.sent_timestamp
            for key, at in list(seen.items()):
                if (now - at) / 1000 >= DEDUPLICATION_TIME_IN_SECONDS:
                    del seen[key]
            if dedupe in seen:
                return
            seen[dedupe] = now
    return _add_message(self, message)


Queue.add_message = _add_message_within_window

if __name__ == "__main__":
    main()
