"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

Each POST to an endpoint with a secret carries `webhook-id` (the delivery's
RequestIdentifier, stable across retries), `webhook-timestamp` (Unix seconds of
this attempt) and `webhook-signature: v1,<base64 HMAC-SHA256>` over
`id.timestamp.body`, keyed with the base64-decoded part of the `whsec_` secret.
Customers verify with the `standardwebhooks` library and reject stale timestamps.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from shortlink.endpoints import secret_key


def headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three signature headers for one attempt."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }
