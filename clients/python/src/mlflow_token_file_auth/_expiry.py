"""When does a token expire? From the Secret's ``expiresAt`` key, or the token's own ``exp`` claim.

Both parsers read data from outside (a mounted file, a token) and never raise: what they cannot
read is ``None``, an unknown expiry. Neither ever puts the token into a message.
"""

from __future__ import annotations

import base64
import json
import math
from datetime import datetime, timezone
from typing import Optional


def parse_expires_at(text: str) -> Optional[float]:
    """An RFC 3339 time (``2026-11-28T12:05:00Z``, as the operator writes ``expiresAt``) as Unix
    seconds; ``None`` when ``text`` is not one. A time without a zone is ambiguous: ``None``."""
    s = text.strip()
    if s[-1:] in ("Z", "z"):  # fromisoformat accepts "Z" only from Python 3.11 on
        s = s[:-1] + "+00:00"
    try:
        t = datetime.fromisoformat(s)
    except ValueError:
        return None
    if t.tzinfo is None:
        return None
    return t.timestamp()


def jwt_exp(token: str) -> Optional[float]:
    """The ``exp`` claim of a JWT (signature not verified: the server checks that), as Unix
    seconds; ``None`` when the token is not a JWT or has no numeric ``exp``."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:  # binascii.Error, JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, (int, float)) or not math.isfinite(exp):
        return None
    return float(exp)


def format_time(t: float) -> str:
    """Unix seconds as RFC 3339 UTC, for messages (the raw number if it is out of range)."""
    try:
        return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return "%r (Unix seconds)" % t
