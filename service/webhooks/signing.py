"""Standard Webhooks signatures (https://www.standardwebhooks.com): the receiver checks
`webhook-signature` against HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}`."""

from __future__ import annotations

import base64
import functools
import hmac
import os

PREFIX = "whsec_"


def new_secret() -> str:
    """A signing secret in the Standard Webhooks form: `whsec_` + base64 of 32 random bytes."""
    return PREFIX + base64.b64encode(os.urandom(32)).decode()


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.digest(_key(secret), b"%s.%d.%s" % (msg_id.encode(), timestamp, body), "sha256")
    return "v1," + base64.b64encode(mac).decode()


@functools.lru_cache(maxsize=4096)
def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(PREFIX))


def signature_header(secrets: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """One signature per secret, space-separated: after a rotation, receivers that still hold the
    previous secret keep verifying until they switch."""
    return " ".join(signature(s, msg_id, timestamp, body) for s in secrets)
