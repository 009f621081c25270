import http.server
import json
import os
import threading
import time

import pytest
import requests

import mlflow_token_file_auth as plugin
from kubelet import project


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in (
        plugin.ENV_TOKEN_FILE,
        plugin.ENV_TRACKING_URI_FILE,
        "MLFLOW_TRACKING_AUTH",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_TOKEN",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
    ):
        monkeypatch.delenv(name, raising=False)
    plugin._cache.clear()
    yield
    plugin._cache.clear()


@pytest.fixture
def counting_open(monkeypatch):
    """Counts the plugin's reads of token files (the module's own `open`; the expiresAt file
    beside the token is read with it and not counted)."""
    calls = []
    real_open = open

    def counted(path, *args, **kwargs):
        if os.path.basename(path) != plugin.EXPIRES_AT_KEY:
            calls.append(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(plugin, "open", counted, raising=False)
    return calls


def header_for(path=None):
    req = requests.Request("GET", "http://127.0.0.1/x", headers={"Authorization": "Bearer stale"})
    return plugin.TokenFileAuth(path)(req.prepare()).headers["Authorization"]


def test_sets_bearer_header_from_file(tmp_path):
    f = tmp_path / "token"
    f.write_text("abc.def.ghi\n")
    assert header_for(str(f)) == "Bearer abc.def.ghi"


def test_path_from_env_and_default(tmp_path, monkeypatch):
    assert plugin.token_file_path() == "/var/run/secrets/mlflow/token" == plugin.DEFAULT_TOKEN_FILE
    f = tmp_path / "t"
    f.write_text("tok-env")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN_FILE", str(f))
    assert plugin.token_file_path() == str(f)
    assert header_for() == "Bearer tok-env"
    assert plugin.TokenFileAuthProvider().get_auth() == plugin.TokenFileAuth(str(f))


def test_missing_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope" / "token"
    with pytest.raises(plugin.TokenFileError) as e:
        plugin.read_token(str(missing))
    msg = str(e.value)
    assert str(missing) in msg and "does not exist" in msg and "MLFLOW_TRACKING_TOKEN_FILE" in msg


@pytest.mark.parametrize("content", ["", "\n", "   \n\t", "Bearer  \n"])
def test_empty_file_is_a_clear_error(tmp_path, content):
    f = tmp_path / "token"
    f.write_text(content)
    with pytest.raises(plugin.TokenFileError, match="is empty"):
        plugin.read_token(str(f))


def test_empty_then_filled_recovers(tmp_path):
    f = tmp_path / "token"
    f.write_text("")
    with pytest.raises(plugin.TokenFileError):
        plugin.read_token(str(f))
    f.write_text("now-there")
    assert plugin.read_token(str(f)) == "now-there"


def test_bearer_prefix_in_file_is_tolerated(tmp_path):
    f = tmp_path / "token"
    f.write_text("Bearer xyz")
    assert header_for(str(f)) == "Bearer xyz"


def test_reads_only_when_changed(tmp_path, counting_open):
    f = tmp_path / "token"
    f.write_text("one")
    for _ in range(50):
        assert plugin.read_token(str(f)) == "one"
    assert len(counting_open) == 1

    # Rewritten in place with the same size: the modification time tells.
    f.write_text("two")
    st = os.stat(f)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert plugin.read_token(str(f)) == "two"
    assert len(counting_open) == 2

    # Replaced by rename (new inode), same size and mtime as before.
    g = tmp_path / "token.new"
    g.write_text("six")
    st = os.stat(f)
    os.utime(g, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(g, f)
    assert plugin.read_token(str(f)) == "six"
    assert len(counting_open) == 3


def test_kubelet_atomic_swap(tmp_path, counting_open):
    d = tmp_path / "mlflow"
    project(str(d), {"token": "token-1", "MLFLOW_TRACKING_URI": "http://mlflow:5000", "expiresAt": "x"})
    # The layout the kubelet makes, and the plugin is pointed at the user-visible name.
    assert os.readlink(d / "token") == os.path.join("..data", "token")
    first = os.readlink(d / "..data")
    assert first.startswith("..") and (d / first / "token").is_file()
    path = str(d / "token")
    assert plugin.read_token(path) == "token-1"
    assert plugin.read_token(path) == "token-1"
    assert len(counting_open) == 1

    # Same length on purpose: only the resolved inode differs.
    project(str(d), {"token": "token-2", "MLFLOW_TRACKING_URI": "http://mlflow:5000", "expiresAt": "y"})
    second = os.readlink(d / "..data")
    assert second != first and not (d / first).exists()
    assert plugin.read_token(path) == "token-2"
    assert header_for(path) == "Bearer token-2"
    assert len(counting_open) == 2


def test_concurrent_reads_during_swaps(tmp_path):
    d = tmp_path / "mlflow"
    project(str(d), {"token": "tok-0000"})
    path = str(d / "token")
    stop = threading.Event()
    errors, seen = [], set()

    def reader():
        while not stop.is_set():
            try:
                seen.add(plugin.read_token(path))
            except Exception as e:  # noqa: BLE001 - any failure fails the test
                errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    # Real swaps are minutes apart; 2 ms apart they still race the readers' path resolution
    # (the old directory is removed while a reader is between ..data and the file) many times.
    for i in range(1, 200):
        project(str(d), {"token": "tok-%04d" % i})
        time.sleep(0.002)
    time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert plugin.read_token(path) == "tok-0199"
    assert all(s.startswith("tok-") and len(s) == 8 for s in seen)


def test_enoent_during_a_swap_is_retried(tmp_path, monkeypatch):
    f = tmp_path / "token"
    f.write_text("tok")
    real_stat, fails = os.stat, [2]

    def flaky_stat(p, *a, **kw):
        if fails[0]:
            fails[0] -= 1
            raise FileNotFoundError(2, "No such file or directory", p)
        return real_stat(p, *a, **kw)

    monkeypatch.setattr(plugin.os, "stat", flaky_stat)
    assert plugin.read_token(str(f)) == "tok"


def test_configure_sets_auth_and_tracking_uri(tmp_path, monkeypatch):
    d = tmp_path / "mlflow"
    project(str(d), {"token": "t", "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000\n"})
    plugin.configure(token_file=str(d / "token"))
    assert os.environ["MLFLOW_TRACKING_AUTH"] == "token-file"
    assert os.environ["MLFLOW_TRACKING_TOKEN_FILE"] == str(d / "token")
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"

    # An explicit MLFLOW_TRACKING_URI wins.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://elsewhere")
    plugin.configure(token_file=str(d / "token"))
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://elsewhere"


def test_configure_fails_fast_without_token(tmp_path):
    with pytest.raises(plugin.TokenFileError):
        plugin.configure(token_file=str(tmp_path / "missing"))


# --- With the real MLflow client ------------------------------------------------------------

mlflow = pytest.importorskip("mlflow")


def test_entry_point_is_registered():
    from importlib.metadata import entry_points

    eps = {ep.name: ep for ep in entry_points(group="mlflow.request_auth_provider")}
    assert "token-file" in eps
    assert eps["token-file"].load() is plugin.TokenFileAuthProvider

    from mlflow.tracking.request_auth.registry import _request_auth_provider_registry

    assert any(isinstance(p, plugin.TokenFileAuthProvider) for p in _request_auth_provider_registry)


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen = []

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        _Recorder.seen.append(self.headers.get("Authorization"))
        body = json.dumps({"experiments": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_server():
    _Recorder.seen = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield "http://127.0.0.1:%d" % srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def test_mlflow_client_sends_rotated_token(tmp_path, monkeypatch, fake_server):
    from mlflow.tracking import MlflowClient

    d = tmp_path / "mlflow"
    project(str(d), {"token": "first-token"})
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "token-file")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN_FILE", str(d / "token"))
    # What envFrom would have put there at container start: the plugin must override it.
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "captured-at-start")
    client = MlflowClient(tracking_uri=fake_server)

    client.search_experiments()
    project(str(d), {"token": "second-token"})
    client.search_experiments()
    assert _Recorder.seen == ["Bearer first-token", "Bearer second-token"]


def test_mlflow_client_reports_missing_file(tmp_path, monkeypatch, fake_server):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "token-file")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN_FILE", str(tmp_path / "absent"))
    with pytest.raises(MlflowException, match="does not exist"):
        MlflowClient(tracking_uri=fake_server).search_experiments()
    assert _Recorder.seen == []
