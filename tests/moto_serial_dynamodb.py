"""Starts moto_server with DynamoDB's item operations serialised.

moto 5.2.5 serves requests on threads and its DynamoDB backend takes no lock, so two concurrent
TransactWriteItems can both pass the same ConditionCheck and the second overwrites the first.
Real DynamoDB serialises conditional writes and transactions on an item; the audit chain's
fork prevention relies on that (tests/tests/aws/adapters.rs concurrent_appends_keep_one_chain).
One lock around the item operations gives moto the same isolation; SQS and Secrets Manager
stay concurrent (SQS long polls must not block other requests).

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

if __name__ == "__main__":
    main()
