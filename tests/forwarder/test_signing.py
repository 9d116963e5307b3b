"""Standard Webhooks signatures: what a customer's verifier accepts, and what it refuses."""

from __future__ import annotations

import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from forwarder import signing
from shortlink.exceptions import ShortlinkError

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BODY = b'{"ClickDetails":[]}'


def test_the_headers_verify_with_the_standardwebhooks_library() -> None:
    """id, timestamp and a v1 signature that the reference verifier accepts for this body."""
    now = int(time.time())
    sent = signing.headers(SECRET, "msg_1", now, BODY)
    assert (sent["webhook-id"], sent["webhook-timestamp"]) == ("msg_1", str(now))
    assert sent["webhook-signature"].startswith("v1,")
    assert Webhook(SECRET).verify(BODY, sent) == {"ClickDetails": []}


@pytest.mark.parametrize(
    "changed",
    [
        {"body": BODY + b" "},
        {"message_id": "msg_2"},
        {"timestamp": 1_700_000_001},
        {"secret": "whsec_" + "A" * 32},
    ],
)
def test_the_signature_covers_the_id_the_timestamp_the_body_and_the_secret(
    changed: dict[str, object],
) -> None:
    """Changing any of them gives another signature."""
    given: dict[str, object] = {
        "secret": SECRET,
        "message_id": "msg_1",
        "timestamp": 1_700_000_000,
        "body": BODY,
    }
    before = signing.headers(**given)["webhook-signature"]  # type: ignore[arg-type]
    after = signing.headers(**{**given, **changed})["webhook-signature"]  # type: ignore[arg-type]
    assert before != after


def test_a_tampered_body_is_refused_by_the_verifier() -> None:
    """The customer's check fails when the body is not the one signed."""
    sent = signing.headers(SECRET, "msg_1", int(time.time()), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(BODY.replace(b"[]", b"[1]"), sent)


def test_a_secret_without_the_prefix_is_refused() -> None:
    """Only whsec_ secrets sign: anything else is an endpoint error, not a weak signature."""
    with pytest.raises(ShortlinkError, match="secret"):
        signing.headers("not-a-secret", "msg_1", 1, BODY)
