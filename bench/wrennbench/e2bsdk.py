"""wrennbench's E2B SDK driver (embedded in wrennbench, run in a pinned venv).

Times, from one Python process, "create a sandbox from TEMPLATE -> the first
command's result" two ways, interleaved (e2b v1 e2b v1 ...) so that drift
on the machine hits both:

  e2b  the official E2B SDK through Wrenn's compat layer: Sandbox.create
       (POST /v2/sandboxes) then sandbox.commands.run("true") (envd's
       process.Start through wrenn-cp's E2B_SANDBOX_URL data path).
  v1   the same work through Wrenn's own API: POST /v1/sandboxes, then
       POST /v1/sandboxes/{id}/exec {"cmd": "true"}, with httpx over the
       very transport the SDK's REST client uses (httpx over pyqwest), so
       the difference is the compat layer, not the language or the HTTP
       stack.

Both run `true` the same way: the SDK always runs /bin/bash -l -c CMD, and
/v1 exec without args runs its cmd with /bin/bash -l -c too.

Environment: E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY for the SDK;
WRENN_API_URL and WRENN_API_KEY for /v1.

Output, one JSON object a line on stdout:
  {"variant": "e2b"|"v1", "i": n, "warmup": bool,
   "total_ms": x, "create_ms": x, "run_ms": x}
and on failure {"error": "...", "variant": ..., "i": n} (then exit 1).
Each sandbox is killed off the clock after its sample; a sample that fails
or an interrupt (SIGTERM, SIGINT) still kills what it created.
"""

import argparse
import importlib.metadata
import json
import os
import signal
import sys
import time

import httpx
from e2b import Sandbox


def emit(**fields):
    print(json.dumps(fields), flush=True)


def ms(ns):
    return ns / 1e6


def sdk_sample(template):
    t0 = time.perf_counter_ns()
    sbx = Sandbox.create(template=template)
    try:
        t1 = time.perf_counter_ns()
        res = sbx.commands.run("true")
        t2 = time.perf_counter_ns()
        if res.exit_code != 0:
            raise RuntimeError(f"commands.run('true'): exit {res.exit_code}: {res.stderr!r}")
    finally:
        sbx.kill()
    return t0, t1, t2


def v1_sample(client, template):
    t0 = time.perf_counter_ns()
    r = client.post("/v1/sandboxes", json={"template": template})
    if r.status_code != 201:
        raise RuntimeError(f"POST /v1/sandboxes: {r.status_code}: {r.text[:500]}")
    sid = r.json()["id"]
    try:
        t1 = time.perf_counter_ns()
        r = client.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": "true"})
        t2 = time.perf_counter_ns()
        if r.status_code != 200:
            raise RuntimeError(f"POST /v1/sandboxes/{sid}/exec: {r.status_code}: {r.text[:500]}")
        body = r.json()
        if body.get("exit_code") != 0:
            raise RuntimeError(f"exec true via /v1: {body}")
    finally:
        d = client.delete(f"/v1/sandboxes/{sid}")
        if d.status_code not in (204, 404):
            print(f"DELETE /v1/sandboxes/{sid}: {d.status_code}: {d.text[:200]}", file=sys.stderr)
    return t0, t1, t2


def v1_client():
    """httpx over the SDK's own shared pyqwest transport when this SDK
    version has it (e2b 2.63 does), else httpx's default transport."""
    kwargs = {}
    try:
        from e2b.api.client_sync import get_httpx_transport

        kwargs["transport"] = get_httpx_transport(None)
        transport = "httpx over the E2B SDK's pyqwest transport"
    except ImportError:
        transport = "httpx (default transport: this SDK has no get_httpx_transport)"
    client = httpx.Client(
        base_url=os.environ["WRENN_API_URL"],
        headers={"Authorization": "Bearer " + os.environ["WRENN_API_KEY"]},
        timeout=120.0,
        **kwargs,
    )
    return client, transport


def interrupted(signum, frame):
    # A KeyboardInterrupt unwinds through the samples' finally blocks, which
    # kill what they created.
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, required=True, help="timed samples of each variant")
    p.add_argument("--template", required=True)
    p.add_argument("--warmup", type=int, default=1, help="untimed samples of each variant first")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, interrupted)

    client, transport = v1_client()
    emit(info="v1 transport", value=transport)
    emit(info="e2b version", value=importlib.metadata.version("e2b"))
    variants = [
        ("e2b", lambda: sdk_sample(args.template)),
        ("v1", lambda: v1_sample(client, args.template)),
    ]
    for i in range(args.warmup + args.n):
        warm = i < args.warmup
        # Alternate which variant goes first in a round, so that neither
        # always follows the other's teardown.
        order = variants if i % 2 == 0 else variants[::-1]
        for name, sample in order:
            try:
                t0, t1, t2 = sample()
            except KeyboardInterrupt:
                emit(error="interrupted", variant=name, i=i)
                return 1
            except Exception as e:  # noqa: BLE001 - reported to the Go side
                emit(error=f"{type(e).__name__}: {e}", variant=name, i=i)
                return 1
            emit(variant=name, i=i, warmup=warm, total_ms=ms(t2 - t0), create_ms=ms(t1 - t0), run_ms=ms(t2 - t1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
