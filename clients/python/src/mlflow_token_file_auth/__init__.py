"""MLflow client auth plugin: the bearer token comes from a file, re-read when it changes.

mlflow-token-operator keeps a fresh Keycloak access token in a Kubernetes Secret. Mounted as a
volume (a directory, not ``subPath``), the kubelet replaces the file in place when the Secret
changes. Stock MLflow reads its token from ``MLFLOW_TRACKING_TOKEN``, an environment variable that
never changes in a running container; this plugin reads the mounted file instead, so a training
job keeps working while its tokens rotate underneath it.

Use it::

    pip install mlflow-token-file-auth           # or: pip install <repo>/clients/python
    export MLFLOW_TRACKING_AUTH=token-file
    export MLFLOW_TRACKING_TOKEN_FILE=/var/run/secrets/mlflow/token   # the default
    export MLFLOW_TRACKING_URI=https://mlflow.example.com            # or call configure()

MLflow looks the plugin up by the name in ``MLFLOW_TRACKING_AUTH`` (entry-point group
``mlflow.request_auth_provider``) and calls it for every REST request. The plugin sets
``Authorization: Bearer <token>``, replacing any header MLflow built from
``MLFLOW_TRACKING_TOKEN`` or ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``.

Cost per request: one ``stat()`` of the token path. The file is read again only when what the
path resolves to has changed (device, inode, size or modification time). The kubelet's atomic
update (a new timestamped directory, then the ``..data`` symlink swapped to it) always yields a
new inode, so a rotation is seen on the next request.

A token past its expiry is never sent. The expiry is the Secret's ``expiresAt`` key read from the
same kubelet snapshot as the token (the file beside it), or the token's ``exp`` claim; with both,
the earlier. An expired token makes the request wait for the rotated file, polling, for at most
``$MLFLOW_TRACKING_TOKEN_EXPIRY_WAIT`` seconds (default 5: the kubelet may deliver a moment
late), and then fail with :class:`TokenExpiredError` naming the file and the expiry.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

try:  # MLflow is present whenever MLflow loads this plugin; keep the module importable without it.
    from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider as _Base
except ImportError:  # pragma: no cover - exercised only without MLflow installed
    _Base = object  # type: ignore[assignment,misc]

from requests.auth import AuthBase

from ._expiry import format_time, jwt_exp, parse_expires_at

__all__ = [
    "PROVIDER_NAME",
    "ENV_TOKEN_FILE",
    "ENV_TRACKING_URI_FILE",
    "ENV_EXPIRY_WAIT",
    "DEFAULT_TOKEN_FILE",
    "TokenFileError",
    "TokenExpiredError",
    "TokenFileAuth",
    "TokenFileAuthProvider",
    "read_token",
    "configure",
]

#: The value of ``MLFLOW_TRACKING_AUTH`` that selects this plugin.
PROVIDER_NAME = "token-file"
#: Environment variable naming the token file.
ENV_TOKEN_FILE = "MLFLOW_TRACKING_TOKEN_FILE"
#: Environment variable naming the tracking-URI file (used by :func:`configure`).
ENV_TRACKING_URI_FILE = "MLFLOW_TRACKING_URI_FILE"
#: Where the docs mount the Secret: ``mountPath: /var/run/secrets/mlflow``, key ``token``.
DEFAULT_TOKEN_FILE = "/var/run/secrets/mlflow/token"
#: Key of the operator's Secret holding the tracking URI (when spec.mlflow.trackingURI is set).
TRACKING_URI_KEY = "MLFLOW_TRACKING_URI"
#: Key of the operator's Secret holding the token's expiry (RFC 3339), read beside the token file.
EXPIRES_AT_KEY = "expiresAt"
#: Environment variable: how many seconds a request waits for a rotated token when the token
#: file holds an expired one (default :data:`DEFAULT_EXPIRY_WAIT`; 0: fail at once).
ENV_EXPIRY_WAIT = "MLFLOW_TRACKING_TOKEN_EXPIRY_WAIT"
DEFAULT_EXPIRY_WAIT = 5.0


class TokenFileError(RuntimeError):
    """The token file is missing, unreadable, empty or holds no usable token."""


class TokenExpiredError(TokenFileError):
    """The token file holds an expired token, and no newer one arrived in time."""


@dataclass(frozen=True)
class _Cached:
    identity: Tuple[int, int, int, int]
    token: str
    # Unix seconds, or None when neither expiresAt nor the token tells.
    expires_at: Optional[float]
    # Where expires_at came from, for messages: "expiresAt (<path>)" or "the token's exp claim".
    expiry_source: str


# How often ENOENT is retried (1, 2, 3 ms apart) before the file counts as missing.
_ENOENT_RETRIES = 3
# How often the token file is read again while waiting for a rotated token.
_POLL_INTERVAL = 0.1
# RFC 6750's b64token: what a bearer token may hold. Anything else (whitespace or control
# characters inside, binary junk) would break or forge the header, so such a file is refused
# without quoting it.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")

_log = logging.getLogger(__name__)

_cache: Dict[str, _Cached] = {}
_lock = threading.Lock()


def token_file_path() -> str:
    """The token file path: ``$MLFLOW_TRACKING_TOKEN_FILE``, else :data:`DEFAULT_TOKEN_FILE`."""
    return os.environ.get(ENV_TOKEN_FILE) or DEFAULT_TOKEN_FILE


def _identity(st: os.stat_result) -> Tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def read_token(path: Optional[str] = None) -> str:
    """Return the token in ``path`` (default: :func:`token_file_path`), re-reading the file only
    when it changed since the last call, and never a token past its expiry.

    ``os.stat`` follows symlinks, so the identity is that of the file the path resolves to *now*:
    after the kubelet swaps ``..data`` to a new directory, the inode differs and the new file is
    read. The file is read and stat'ed through one open descriptor, so the cached identity always
    belongs to the content cached with it, even when a swap happens in between.

    When the token has expired (see :func:`_load` for where the expiry comes from), the file is
    read again every 0.1 s for up to ``$MLFLOW_TRACKING_TOKEN_EXPIRY_WAIT`` seconds (default 5),
    since the kubelet may deliver the rotated Secret a moment late.

    Raises:
        TokenExpiredError: The token expired and no newer one arrived within the wait.
        TokenFileError: The file does not exist, cannot be read, holds only whitespace or
            something that is not a bearer token.
    """
    path = path or token_file_path()
    entry = _current(path, use_cache=True)
    if not _expired(entry):
        return entry.token
    wait = _expiry_wait()
    _log.warning(
        "MLflow token file %s holds a token that expired at %s (from %s); waiting up to %gs for the rotated token",
        path, format_time(entry.expires_at), entry.expiry_source, wait,
    )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        time.sleep(min(_POLL_INTERVAL, max(0.0, deadline - time.monotonic())))
        # Uncached: beside an unchanged token file, expiresAt may have been fixed.
        entry = _current(path, use_cache=False)
        if not _expired(entry):
            return entry.token
    ago = time.time() - entry.expires_at
    raise TokenExpiredError(
        f"MLflow token file {path} holds a token that expired at {format_time(entry.expires_at)} "
        f"({ago:.0f}s ago; expiry from {entry.expiry_source}), and no newer token arrived within "
        f"{wait:g}s. The operator writes a new token before the old one expires: is the "
        f"MLflowAccessToken Ready (kubectl mlflow-token inspect NAME), and is its Secret mounted "
        f"as a directory (a subPath mount never changes)?"
    )


def _expired(entry: _Cached) -> bool:
    return entry.expires_at is not None and time.time() >= entry.expires_at


def _expiry_wait() -> float:
    raw = os.environ.get(ENV_EXPIRY_WAIT, "")
    try:
        wait = float(raw) if raw.strip() else DEFAULT_EXPIRY_WAIT
    except ValueError:
        wait = -1.0
    if not 0 <= wait < float("inf"):
        _log.warning("%s=%r is not a number of seconds; using %g", ENV_EXPIRY_WAIT, raw, DEFAULT_EXPIRY_WAIT)
        wait = DEFAULT_EXPIRY_WAIT
    return wait


def _current(path: str, use_cache: bool) -> _Cached:
    """The token and its expiry: from the cache while the file is unchanged, else read afresh."""
    # Resolving <dir>/token -> ..data/token -> ..<timestamp>/token is not atomic: when the kubelet
    # swaps ..data and removes the old timestamped directory in between, stat() or open() fails
    # with ENOENT although the file exists. So ENOENT is retried a few times before it counts.
    for attempt in range(_ENOENT_RETRIES + 1):
        try:
            if use_cache:
                ident = _identity(os.stat(path))
                with _lock:
                    hit = _cache.get(path)
                if hit is not None and hit.identity == ident:
                    return hit
            return _load(path)
        except FileNotFoundError:
            if attempt < _ENOENT_RETRIES:
                time.sleep(0.001 * (attempt + 1))
                continue
            raise TokenFileError(
                f"MLflow token file {path} does not exist. Mount the Secret written by "
                f"mlflow-token-operator as a volume (not subPath) and point {ENV_TOKEN_FILE} at its "
                f"'token' key (default {DEFAULT_TOKEN_FILE})."
            ) from None
        except OSError as e:
            raise TokenFileError(f"MLflow token file {path} cannot be read: {e}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _load(path: str) -> _Cached:
    """Read the token file and its expiry, and cache them.

    The path is resolved once and both files are read from that directory, so with the kubelet's
    layout the token and ``expiresAt`` come from the same snapshot of the Secret even while
    ``..data`` is swapped. The expiry is the earlier of ``expiresAt`` and the token's ``exp``
    claim, where readable: a stale or edited ``expiresAt`` cannot make an expired JWT look valid.
    """
    real = os.path.realpath(path)
    with open(real, "rb") as f:
        data = f.read()
        ident = _identity(os.fstat(f.fileno()))
    token = _parse_token(path, data)
    candidates = []
    expires_file = os.path.join(os.path.dirname(real), EXPIRES_AT_KEY)
    try:
        with open(expires_file, "rb") as f:
            raw = f.read(256)
    except OSError:  # missing (not every mount projects it) or unreadable: the claim decides
        raw = None
    if raw is not None:
        at = parse_expires_at(raw.decode("utf-8", "replace"))
        if at is None:
            _log.warning("Ignoring %s: not an RFC 3339 time", expires_file)
        else:
            candidates.append((at, f"{EXPIRES_AT_KEY} ({expires_file})"))
    exp = jwt_exp(token)
    if exp is not None:
        candidates.append((exp, "the token's exp claim"))
    expires_at, source = min(candidates) if candidates else (None, "")
    entry = _Cached(ident, token, expires_at, source)
    with _lock:
        _cache[path] = entry
    return entry


def _parse_token(path: str, data: bytes) -> str:
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise TokenFileError(f"MLflow token file {path} is not UTF-8 text") from None
    scheme, _, rest = token.partition(" ")
    if scheme.lower() == "bearer":  # tolerate a file holding the whole header value
        token = rest.strip()
    if not token:
        raise TokenFileError(
            f"MLflow token file {path} is empty: the Secret holds no token yet (is the "
            f"MLflowAccessToken Ready? kubectl get mlflowaccesstoken)."
        )
    if not _B64TOKEN.fullmatch(token):
        raise TokenFileError(
            f"MLflow token file {path} does not hold a bearer token ({len(token)} characters, some "
            f"of them not allowed in a token, e.g. whitespace inside). Point {ENV_TOKEN_FILE} at "
            f"the 'token' key of the Secret written by mlflow-token-operator."
        )
    return token


class TokenFileAuth(AuthBase):
    """``requests`` auth that sets ``Authorization: Bearer <token from file>`` on each request."""

    def __init__(self, path: Optional[str] = None):
        self.path = path

    def __call__(self, r):
        r.headers["Authorization"] = "Bearer " + read_token(self.path)
        return r

    def __eq__(self, other):
        return isinstance(other, TokenFileAuth) and other.path == self.path

    def __repr__(self):
        return f"TokenFileAuth(path={self.path or token_file_path()!r})"


class TokenFileAuthProvider(_Base):
    """The ``mlflow.request_auth_provider`` entry point, selected by ``MLFLOW_TRACKING_AUTH=token-file``."""

    def get_name(self):
        return PROVIDER_NAME

    def get_auth(self):
        # MLflow calls this for every request; the path is read from the environment each time
        # so that a process may change it, and the file is read only when it changed.
        return TokenFileAuth(token_file_path())


def configure(token_file: Optional[str] = None, tracking_uri_file: Optional[str] = None) -> None:
    """Point this process's MLflow client at the mounted Secret.

    Sets ``MLFLOW_TRACKING_AUTH=token-file`` and, when ``MLFLOW_TRACKING_URI`` is unset, sets it
    from the Secret's ``MLFLOW_TRACKING_URI`` key (``$MLFLOW_TRACKING_URI_FILE``, default: next
    to the token file), if that file exists. Call it before the first MLflow call; setting the
    environment variables in the pod spec does the same without code.

    Raises:
        TokenFileError: When the token file cannot be read (checked once, up front).
    """
    if token_file:
        os.environ[ENV_TOKEN_FILE] = token_file
    os.environ["MLFLOW_TRACKING_AUTH"] = PROVIDER_NAME
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        uri_file = (
            tracking_uri_file
            or os.environ.get(ENV_TRACKING_URI_FILE)
            or os.path.join(os.path.dirname(token_file_path()), TRACKING_URI_KEY)
        )
        try:
            with open(uri_file, encoding="utf-8") as f:
                uri = f.read().strip()
        except OSError:
            uri = ""
        if uri:
            os.environ["MLFLOW_TRACKING_URI"] = uri
    read_token()
