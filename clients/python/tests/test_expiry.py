"""A token past its expiry is never sent: expired, about-to-be-rotated and garbage files."""

import base64
import json
import logging
import os
import threading
import time

import pytest

import mlflow_token_file_auth as plugin
from mlflow_token_file_auth import _expiry
from kubelet import project


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    monkeypatch.delenv(plugin.ENV_EXPIRY_WAIT, raising=False)
    plugin._cache.clear()
    yield
    plugin._cache.clear()


def jwt(**claims):
    """An unsigned JWT with the given claims (the plugin never verifies signatures)."""
    enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
    return enc(b'{"alg":"RS256","typ":"JWT"}') + "." + enc(json.dumps(claims).encode()) + ".c2lnbmF0dXJl"


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def secret_dir(tmp_path, token, expires_at=None):
    """The operator's Secret as the kubelet mounts it; returns the token path."""
    data = {"token": token, "MLFLOW_TRACKING_TOKEN": token}
    if expires_at is not None:
        data["expiresAt"] = expires_at
    d = tmp_path / "mlflow"
    project(str(d), data)
    return str(d / "token")


def test_the_plugin_under_test_is_this_checkout():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert plugin.__file__.startswith(os.path.join(here, "src") + os.sep), plugin.__file__


def test_valid_token_is_sent(tmp_path):
    now = time.time()
    tok = jwt(exp=int(now) + 3600)
    path = secret_dir(tmp_path, tok, rfc3339(now + 3600))
    assert plugin.read_token(path) == tok
    assert plugin._cache[path].expires_at == pytest.approx(int(now) + 3600, abs=1)


def test_expired_token_fails_naming_the_file_and_the_expiry(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(plugin.ENV_EXPIRY_WAIT, "1")
    exp = int(time.time()) - 3600
    tok = jwt(exp=exp, sub="alice")
    path = secret_dir(tmp_path, tok)
    start = time.monotonic()
    with pytest.raises(plugin.TokenExpiredError) as e:
        plugin.read_token(path)
    waited = time.monotonic() - start
    msg = str(e.value)
    assert path in msg and rfc3339(exp) in msg and "the token's exp claim" in msg and "within 1s" in msg, msg
    assert isinstance(e.value, plugin.TokenFileError)  # callers catching TokenFileError see it too
    assert 0.9 <= waited < 2.0, waited
    for text in (msg, caplog.text):
        assert tok not in text and tok.split(".")[2] not in text


def test_expired_by_expires_at(tmp_path, monkeypatch):
    """An opaque token (no claims) expires by the Secret's expiresAt, read from the same
    snapshot of the volume."""
    monkeypatch.setenv(plugin.ENV_EXPIRY_WAIT, "0")
    at = time.time() - 30
    path = secret_dir(tmp_path, "opaque-token", rfc3339(at))
    with pytest.raises(plugin.TokenExpiredError) as e:
        plugin.read_token(path)
    snapshot = os.path.realpath(os.path.dirname(path) + "/..data")
    assert rfc3339(at) in str(e.value) and "expiresAt (" + os.path.join(snapshot, "expiresAt") + ")" in str(e.value), str(e.value)


@pytest.mark.parametrize(
    "exp_offset, expires_at_offset",
    [
        (3600, -30),  # expiresAt says expired: believed
        (-30, 365 * 86400),  # an edited expiresAt far in the future cannot revive an expired JWT
    ],
)
def test_the_earlier_expiry_wins(tmp_path, monkeypatch, exp_offset, expires_at_offset):
    monkeypatch.setenv(plugin.ENV_EXPIRY_WAIT, "0")
    now = time.time()
    path = secret_dir(tmp_path, jwt(exp=int(now + exp_offset)), rfc3339(now + expires_at_offset))
    with pytest.raises(plugin.TokenExpiredError):
        plugin.read_token(path)


def test_rotated_token_arriving_during_the_wait_is_sent(tmp_path, caplog):
    """The token expired and the kubelet delivers the rotated Secret 0.4 s late: the request
    waits for it and sends the new token, never the expired one."""
    now = time.time()
    old, new = jwt(exp=int(now) - 1, n=1), jwt(exp=int(now) + 300, n=2)
    path = secret_dir(tmp_path, old, rfc3339(now - 1))
    late = threading.Timer(0.4, project, args=(str(tmp_path / "mlflow"), {"token": new, "expiresAt": rfc3339(now + 300)}))
    late.start()
    start = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="mlflow_token_file_auth"):
            assert plugin.read_token(path) == new
    finally:
        late.join()
    assert 0.35 <= time.monotonic() - start < 2.0
    assert "waiting up to 5s for the rotated token" in caplog.text and path in caplog.text
    assert old not in caplog.text and new not in caplog.text
    assert plugin.read_token(path) == new  # and from the cache from then on


def test_token_about_to_expire_is_still_sent_at_once(tmp_path):
    """The operator renews at two thirds of the lifetime; a token with seconds left is valid and
    goes out without delay, and its successor follows at the next request after the swap."""
    now = time.time()
    soon = jwt(exp=int(now) + 3)
    path = secret_dir(tmp_path, soon, rfc3339(int(now) + 3))
    start = time.monotonic()
    assert plugin.read_token(path) == soon
    assert time.monotonic() - start < 0.1
    nxt = jwt(exp=int(now) + 300)
    project(str(tmp_path / "mlflow"), {"token": nxt, "expiresAt": rfc3339(now + 300)})
    assert plugin.read_token(path) == nxt


def test_a_cached_token_is_checked_at_every_request(tmp_path, monkeypatch):
    """The file does not change, but time passes: the cached token expires like any other."""
    monkeypatch.setenv(plugin.ENV_EXPIRY_WAIT, "0")
    exp = time.time() + 1.2
    path = secret_dir(tmp_path, jwt(exp=exp))
    assert plugin.read_token(path)
    time.sleep(max(0, exp - time.time()) + 0.05)
    with pytest.raises(plugin.TokenExpiredError):
        plugin.read_token(path)


@pytest.mark.parametrize(
    "content",
    [
        "abc def",  # whitespace inside: two tokens? a typo? never a bearer token
        "tok\x00en",
        "abc\r\nX-Injected: 1",  # would forge a header
        "tök",  # not ASCII
        "Bearer a b",
        '{"token": "x"}',  # the whole Secret as JSON, not its key
    ],
)
def test_garbage_token_file_is_refused_without_quoting_it(tmp_path, content):
    f = tmp_path / "token"
    f.write_text(content)
    with pytest.raises(plugin.TokenFileError, match="does not hold a bearer token") as e:
        plugin.read_token(str(f))
    assert str(f) in str(e.value) and content not in str(e.value)


@pytest.mark.parametrize("expires_at", ["x", "", "2026-13-45T00:00:00Z", "1700000000", "2026-11-28T12:05:00", "\xff\xfe"])
def test_garbage_expires_at_is_ignored_and_the_claim_decides(tmp_path, monkeypatch, caplog, expires_at):
    monkeypatch.setenv(plugin.ENV_EXPIRY_WAIT, "0")
    now = time.time()
    valid = jwt(exp=int(now) + 300)
    path = secret_dir(tmp_path, valid, expires_at)
    with caplog.at_level(logging.WARNING, logger="mlflow_token_file_auth"):
        assert plugin.read_token(path) == valid
    assert "Ignoring" in caplog.text and "expiresAt" in caplog.text
    plugin._cache.clear()
    expired = jwt(exp=int(now) - 300)
    project(str(tmp_path / "mlflow"), {"token": expired, "expiresAt": expires_at})
    with pytest.raises(plugin.TokenExpiredError, match="the token's exp claim"):
        plugin.read_token(path)


@pytest.mark.parametrize(
    "token",
    [
        "opaque-token-without-dots",
        "a.b.c",  # three parts, payload not base64 JSON
        jwt(sub="no-exp"),
        jwt(exp="soon"),
        jwt(exp=True),
        "x." + base64.urlsafe_b64encode(b"[1,2]").decode().rstrip("=") + ".y",
        "x." + base64.urlsafe_b64encode(b'{"exp": 1e999}').decode().rstrip("=") + ".y",  # inf
    ],
)
def test_token_without_a_readable_expiry_is_sent(tmp_path, token):
    """Without expiresAt and an exp claim the expiry is unknown: the server decides, as before."""
    f = tmp_path / "token"
    f.write_text(token)
    assert plugin.read_token(str(f)) == token
    assert plugin._cache[str(f)].expires_at is None


@pytest.mark.parametrize("value, want", [("", 5.0), ("2.5", 2.5), ("0", 0.0), ("soon", 5.0), ("-1", 5.0), ("inf", 5.0), ("nan", 5.0)])
def test_expiry_wait_setting(monkeypatch, value, want):
    monkeypatch.setenv(plugin.ENV_EXPIRY_WAIT, value)
    assert plugin._expiry_wait() == want


def test_expiry_parsers():
    assert _expiry.parse_expires_at("2026-11-28T12:05:00Z") == 1795867500.0
    assert _expiry.parse_expires_at(" 2026-11-28T13:05:00+01:00\n") == 1795867500.0
    assert _expiry.parse_expires_at("2026-11-28T12:05:00.500000Z") == 1795867500.5
    assert _expiry.parse_expires_at("2026-11-28") is None
    assert _expiry.jwt_exp(jwt(exp=1795867500)) == 1795867500.0
    assert _expiry.jwt_exp(jwt(exp=1795867500.25)) == 1795867500.25
    assert _expiry.format_time(1795867500) == "2026-11-28T12:05:00Z"
    assert "Unix seconds" in _expiry.format_time(1e300)


# --- With the real MLflow client ------------------------------------------------------------


def test_mlflow_client_never_sends_an_expired_token(tmp_path, monkeypatch):
    """Through MLflow's own request path: the expired token never leaves the process, and the
    MlflowException says which file and which expiry."""
    import http.server

    # Not importorskip: the test extra (and the venv of `make test`) has MLflow; without it this
    # test fails rather than vanish from the count.

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    seen = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            seen.append(self.headers.get("Authorization"))
            self.send_response(500)
            self.end_headers()

        do_GET = do_POST

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        exp = int(time.time()) - 60
        path = secret_dir(tmp_path, jwt(exp=exp))
        monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "token-file")
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN_FILE", path)
        monkeypatch.setenv(plugin.ENV_EXPIRY_WAIT, "0.3")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        with pytest.raises(MlflowException) as e:
            MlflowClient(tracking_uri="http://127.0.0.1:%d" % srv.server_address[1]).search_experiments()
        assert path in str(e.value) and rfc3339(exp) in str(e.value)
        assert seen == []
    finally:
        srv.shutdown()
        srv.server_close()
