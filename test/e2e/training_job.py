"""A stand-in for a long training job, run by the end-to-end test (test/e2e) in bin/venv-mlflow.

It logs a parameter and a metric every --interval seconds for --duration seconds with the stock
MLflow client API, and writes what happened to --out (JSON). How it authenticates is decided by
the environment alone, exactly as in a pod:

  plugin mode  MLFLOW_TRACKING_AUTH=token-file, MLFLOW_TRACKING_TOKEN_FILE=<projected dir>/token
               (mlflow_token_file_auth.configure() also takes MLFLOW_TRACKING_URI from that dir)
  stock mode   MLFLOW_TRACKING_TOKEN=<the token the Secret held at start> (what envFrom gives)

--mode plugin keeps going after a failure (the test requires that there is none); --mode stock
stops at the first failure, which is the point: that is when its captured token expired.

--artifact-every N also uploads a small text artifact every N steps (through the tracking
server's artifact proxy, `mlflow server --serve-artifacts`) and lists the run's artifacts at the
end. --out - prints the result as one line "RESULT <json>" on stdout instead of a file: a pod's
log is how the node test (test/cluster) reads it.
"""

import argparse
import hashlib
import json
import os
import re
import sys
import time


def main():
    started_wall = time.time()  # before the (slow) imports: when the "container" started
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["plugin", "stock"], required=True)
    ap.add_argument("--experiment", required=True)
    ap.add_argument("--duration", type=float, required=True)
    ap.add_argument("--interval", type=float, default=3.0)
    ap.add_argument("--out", required=True, help="result file, or - for a RESULT line on stdout")
    ap.add_argument("--artifact-every", type=int, default=0, help="upload an artifact every N steps (0: none)")
    args = ap.parse_args()

    if args.mode == "plugin":
        import mlflow_token_file_auth

        mlflow_token_file_auth.configure()  # MLFLOW_TRACKING_AUTH, URI from the mounted Secret
    import mlflow
    import mlflow.utils.rest_utils as rest_utils
    from mlflow.exceptions import MlflowException

    # Record the HTTP status of each response. mlflow-oidc-auth answers 401 with a FastAPI body
    # ({"detail": "..."}) that has no MLflow error_code, which MLflow turns into INTERNAL_ERROR,
    # so the exception alone does not tell a 401 from a 500.
    last_status = {}
    verify = rest_utils.verify_rest_response

    def recording_verify(response, *a, **kw):
        last_status["code"] = response.status_code
        return verify(response, *a, **kw)

    rest_utils.verify_rest_response = recording_verify

    result = {
        "mode": args.mode,
        "mlflow_version": mlflow.__version__,
        "tracking_uri": mlflow.get_tracking_uri(),
        "calls": [],
        "tokens": [],  # sha256 prefixes of the distinct tokens sent, in order (plugin mode)
        "first_failure": None,
        "started_wall": started_wall,
    }

    def token_seen():
        if args.mode != "plugin":
            return
        import mlflow_token_file_auth

        h = hashlib.sha256(mlflow_token_file_auth.read_token().encode()).hexdigest()[:12]
        if not result["tokens"] or result["tokens"][-1] != h:
            result["tokens"].append(h)

    start = time.monotonic()

    def call(what, fn):
        t = round(time.monotonic() - start, 2)
        wall = time.time()
        last_status.clear()
        try:
            token_seen()
            fn()
            result["calls"].append({"t": t, "wall": wall, "what": what, "ok": True})
            print(f"[{args.mode}] t={t:6.2f}s {what}: ok", flush=True)
            return True
        except MlflowException as e:
            status = last_status.get("code")
            if status is None:  # no response at all
                m = re.search(r"error code (\d{3})", str(e))
                status = int(m.group(1)) if m else None
            entry = {"t": t, "wall": wall, "what": what, "ok": False, "status": status, "error": str(e)[:300]}
        except Exception as e:  # noqa: BLE001 - record anything
            entry = {"t": t, "wall": wall, "what": what, "ok": False, "status": None, "error": f"{type(e).__name__}: {e}"[:300]}
        result["calls"].append(entry)
        if result["first_failure"] is None:
            result["first_failure"] = entry
        print(f"[{args.mode}] t={t:6.2f}s {what}: FAILED {entry['status']} {entry['error']}", flush=True)
        return False

    def finish(code):
        result["elapsed"] = round(time.monotonic() - start, 2)
        if args.out == "-":
            print("RESULT " + json.dumps(result, separators=(",", ":")), flush=True)
        else:
            with open(args.out, "w") as f:
                json.dump(result, f, indent=1)
        sys.exit(code)

    client = mlflow.MlflowClient()
    exp = {}
    if not call("get_experiment_by_name", lambda: exp.update(e=client.get_experiment_by_name(args.experiment))):
        finish(1)
    if exp["e"] is None:
        result["first_failure"] = {"what": "get_experiment_by_name", "error": f"experiment {args.experiment} not visible"}
        finish(1)
    run = {}
    if not call("create_run", lambda: run.update(r=client.create_run(exp["e"].experiment_id, run_name=f"{args.mode}-job"))):
        finish(1)
    run_id = run["r"].info.run_id
    result["run_id"] = run_id

    step = 0
    while time.monotonic() - start < args.duration:
        ok = call(f"log_param lr_{step}", lambda: client.log_param(run_id, f"lr_{step}", 0.01 * (step + 1)))
        ok = call(f"log_metric loss step={step}", lambda: client.log_metric(run_id, "loss", 1.0 / (step + 1), step=step)) and ok
        if args.artifact_every and step % args.artifact_every == 0:
            path = f"checkpoints/step-{step}.txt"
            ok = call(f"log_text {path}", lambda: client.log_text(run_id, f"step {step}\n", path)) and ok
            if ok:
                result["artifacts_logged"] = result.get("artifacts_logged", 0) + 1
        if not ok and args.mode == "stock":
            finish(0)
        step += 1
        time.sleep(args.interval)

    call("set_terminated", lambda: client.set_terminated(run_id))
    # Read back what was logged: the server has every step.
    hist = {}
    call("get_metric_history", lambda: hist.update(h=client.get_metric_history(run_id, "loss")))
    result["steps"] = step
    result["metric_points"] = len(hist.get("h") or [])
    if args.artifact_every:
        listed = {}
        call("list_artifacts checkpoints", lambda: listed.update(a=client.list_artifacts(run_id, "checkpoints")))
        result["artifacts_listed"] = len(listed.get("a") or [])
    finish(0 if all(c["ok"] for c in result["calls"]) else 1)


if __name__ == "__main__":
    main()
