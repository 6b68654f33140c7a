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

And it makes TransactWriteItems behave as DynamoDB documents it, at a cost that does not grow
with the table: moto 5.2.5 deep-copies the whole table once per transaction item to be able to
roll back, which makes a transaction on a table of 100,000 items take seconds (the load bench,
tests/benches/aws_load.rs, writes that many). Here every condition is checked first against the
state before the transaction; if one fails, nothing is written and the cancellation reasons say
which; otherwise the writes are applied, and undone item by item if one of them fails. A
repeated request with the same ClientRequestToken within 10 minutes succeeds without applying
again (DynamoDB's idempotency, which the SDK relies on when it retries an attempt that timed
out after the transaction was applied).

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

import time

from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    ConditionalCheckFailed,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.responses import DynamoHandler


def _transact_write_items(self, transact_items):
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    ops = []
    seen = set()
    for item in transact_items:
        if len(item) > 1:
            raise TransactWriteSingleOpException
        op_type, op = next(iter(item.items()))
        if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
            raise ValueError("Unsupported transaction operation")
        table = self.get_table(op["TableName"])
        if op_type == "Put":
            attrs = op["Item"]
            key = {table.hash_key_attr: attrs[table.hash_key_attr]}
            if table.range_key_attr is not None:
                key[table.range_key_attr] = attrs[table.range_key_attr]
        else:
            key = op["Key"]
        marker = (op["TableName"], str(dict(sorted(key.items()))))
        if marker in seen:
            raise MultipleTransactionsException()
        seen.add(marker)
        ops.append((op_type, op, key))
    # Every condition against the state before the transaction.
    errors = []
    for op_type, op, key in ops:
        current = self.get_item(op["TableName"], key)
        condition = op.get("ConditionExpression")
        if condition is not None and not get_filter_expression(
            condition,
            op.get("ExpressionAttributeNames"),
            op.get("ExpressionAttributeValues"),
        ).expr(current):
            old = None
            if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                old = current.to_json()["Attributes"]
            errors.append(("ConditionalCheckFailed", "The conditional request failed", old))
        else:
            errors.append((None, None, None))
    if any(code is not None for code, _, _ in errors):
        raise TransactionCanceledException(errors)
    # Apply, keeping what each item was so a failing write can be undone.
    before = []
    try:
        for op_type, op, key in ops:
            name = op["TableName"]
            current = self.get_item(name, key)
            before.append((name, key, current.to_json()["Attributes"] if current else None))
            names = op.get("ExpressionAttributeNames")
            values = op.get("ExpressionAttributeValues")
            if op_type == "Put":
                self.put_item(name, op["Item"], expression_attribute_names=names,
                              expression_attribute_values=values)
            elif op_type == "Delete":
                self.delete_item(name, key, expression_attribute_names=names,
                                 expression_attribute_values=values)
            elif op_type == "Update":
                self.update_item(name, key, update_expression=op["UpdateExpression"],
                                 expression_attribute_names=names,
                                 expression_attribute_values=values)
    except Exception:
        for name, key, attrs in reversed(before):
            if attrs is None:
                self.delete_item(name, key)
            else:
                self.put_item(name, attrs)
        raise


DynamoDBBackend.transact_write_items = _serialised(_transact_write_items)

_TOKENS = {}
_TOKEN_WINDOW = 600
_handle_transact = DynamoHandler.transact_write_items


def _transact_once_per_token(self):
    token = self.body.get("ClientRequestToken")
    if not token:
        return _handle_transact(self)
    with _LOCK:
        now = time.time()
        # Oldest first (insertion order, under the lock): forgetting costs what expired.
        while _TOKENS:
            oldest = next(iter(_TOKENS))
            if now - _TOKENS[oldest][0] < _TOKEN_WINDOW:
                break
            del _TOKENS[oldest]
        if token in _TOKENS:
            return _TOKENS[token][1]
        answer = _handle_transact(self)
        _TOKENS[token] = (now, answer)
        return answer


DynamoHandler.transact_write_items = _transact_once_per_token

from moto.dynamodb.models.table import Table

# Query at a cost that grows with the partition, not the table. moto 5.2.5 builds a query's
# candidates from `all_items()`, which lists and sorts every item of the table, even for a
# query on the table's own key; the load bench (tests/benches/aws_load.rs) writes 40,000
# items and its commits then hit the SDK's deadline. Inside a query the candidates need no
# order (the query sorts what matched), and a query on the table's key needs only its
# partition. Queries on an index still read every item, as moto keeps no index.
_all_items = Table.all_items
_query = Table.query
_QUERYING = threading.local()
_NOT_QUERYING = object()


def _items_for_query(self):
    hash_key = getattr(_QUERYING, "hash_key", _NOT_QUERYING)
    if hash_key is _NOT_QUERYING:
        return _all_items(self)
    if hash_key is None:
        items = []
        for partition in self.items.values():
            if self.range_key_attr:
                items.extend(partition.values())
            else:
                items.append(partition)
        return items
    partition = self.items.get(hash_key)
    if partition is None:
        return []
    return list(partition.values()) if self.range_key_attr else [partition]


def _query_one_partition(self, hash_key, *args, **kwargs):
    index_name = kwargs.get("index_name")
    if index_name is None and len(args) >= 7:
        index_name = args[6]
    _QUERYING.hash_key = None if index_name else hash_key
    try:
        return _query(self, hash_key, *args, **kwargs)
    finally:
        _QUERYING.hash_key = _NOT_QUERYING


Table.all_items = _items_for_query
Table.query = _query_one_partition

from moto.sqs.models import DEDUPLICATION_TIME_IN_SECONDS, Queue

_add_message = Queue.add_message


def _add_message_within_window(self, message):
    dedupe = message.deduplication_id
    if self.fifo_queue and dedupe:
        with _LOCK:
            seen = self.__dict__.setdefault("_dedupe_sent_at", {})
            now = message.sent_timestamp
            while seen:
                oldest = next(iter(seen))
                if (now - seen[oldest]) / 1000 < DEDUPLICATION_TIME_IN_SECONDS:
                    break
                del seen[oldest]
            if dedupe in seen:
                return
            seen[dedupe] = now
    return _add_message(self, message)


Queue.add_message = _add_message_within_window

if __name__ == "__main__":
    main()
