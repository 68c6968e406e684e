"""The JavaScript client's own tests (tests/js, Node's test runner) against a real gateway.

Node starts and restarts the gateway itself (``python -m tests.support.gateways``);
this test gives it a worker, Redis (the session's private one, through the environment)
and tokens, and fails with Node's report when any of its tests fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from meetingtasks.run.embedded_redis import free_port
from tests.support.gateways import REPO, SECRET, token

pytestmark = pytest.mark.timeout(300)

SHORT_TTL = 3


def test_the_js_client_under_node(app, redis, start_worker, tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node, "Node.js 20 or later is needed (scripts/test's machine has it)"
    start_worker(["default", "user"])
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "REPO": str(REPO),
        "MEETINGTASKS_SECRET": SECRET,
        "GATEWAY_PORT": str(free_port()),
        "GATEWAY_LOG": str(tmp_path / "gateway.log"),
        "TOKEN": token("alice", ("m1",)),
        "BAD_TOKEN": token("alice", ("m1",), secret="another-secret-" + "y" * 40),
        "SHORT_TTL": str(SHORT_TTL),
    }
    run = subprocess.run(
        [node, "--experimental-websocket", "--test", "--test-reporter=spec",
         "tests/js/client.test.mjs"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    passed = re.search(r"^\S* pass (\d+)$", report, re.MULTILINE)
    failed = re.search(r"^\S* fail (\d+)$", report, re.MULTILINE)
    assert passed and int(passed.group(1)) >= 7 and failed and failed.group(1) == "0", report
