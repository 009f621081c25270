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
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

try:  # MLflow is present whenever MLflow loads this plugin; keep the module importable without it.
    from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider as _Base
except ImportError:  # pragma: no cover - exercised only without MLflow installed
    _Base = object  # type: ignore[assignment,misc]

from requests.auth import AuthBase

__all__ = [
    "PROVIDER_NAME",
    "ENV_TOKEN_FILE",
    "ENV_TRACKING_URI_FILE",
    "DEFAULT_TOKEN_FILE",
    "TokenFileError",
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


class TokenFileError(RuntimeError):
    """The token file is missing, unreadable or empty."""


@dataclass(frozen=True)
class _Cached:
    identity: Tuple[int, int, int, int]
    token: str


# How often ENOENT is retried (1, 2, 3 ms apart) before the file counts as missing.
_ENOENT_RETRIES = 3

_cache: Dict[str, _Cached] = {}
_lock = threading.Lock()


def token_file_path() -> str:
    """The token file path: ``$MLFLOW_TRACKING_TOKEN_FILE``, else :data:`DEFAULT_TOKEN_FILE`."""
    return os.environ.get(ENV_TOKEN_FILE) or DEFAULT_TOKEN_FILE


def _identity(st: os.stat_result) -> Tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def read_token(path: Optional[str] = None) -> str:
    """Return the token in ``path`` (default: :func:`token_file_path`), re-reading the file only
    when it changed since the last call.

    ``os.stat`` follows symlinks, so the identity is that of the file the path resolves to *now*:
    after the kubelet swaps ``..data`` to a new directory, the inode differs and the new file is
    read. The file is read and stat'ed through one open descriptor, so the cached identity always
    belongs to the content cached with it, even when a swap happens in between.

    Raises:
        TokenFileError: The file does not exist, cannot be read, or holds only whitespace.
    """
    path = path or token_file_path()
    # Resolving <dir>/token -> ..data/token -> ..<timestamp>/token is not atomic: when the kubelet
    # swaps ..data and removes the old timestamped directory in between, stat() or open() fails
    # with ENOENT although the file exists. So ENOENT is retried a few times before it counts.
    for attempt in range(_ENOENT_RETRIES + 1):
        try:
            st = os.stat(path)
            ident = _identity(st)
            with _lock:
                hit = _cache.get(path)
            if hit is not None and hit.identity == ident:
                return hit.token
            with open(path, "rb") as f:
                data = f.read()
                ident = _identity(os.fstat(f.fileno()))
            break
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
    with _lock:
        _cache[path] = _Cached(ident, token)
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
