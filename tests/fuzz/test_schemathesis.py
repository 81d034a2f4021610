"""Schemathesis against the gateway's and the explorer's OpenAPI schemas, on running processes: no 5xx.

The gateway publishes its schema at /openapi.json; the explorer (an HTML dashboard) does not serve one, so
its schema comes from the same FastAPI app built in this process, and the cases go to the real
`covey explorer serve`. Each operation gets a bounded number of generated cases.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.support import REPO_ROOT, free_port, wait_for_rpc
from tests.untrusted import covey_serve

pytestmark = pytest.mark.e2e

CASES_PER_OPERATION = 40


def _env(home: Path, rpc_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVEY_")}
    env["COVEY_HOME"] = str(home)
    if rpc_url:
        env["COVEY_RPC_URL"] = rpc_url
    return env


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A served chain with the suite, and `covey gateway serve` and `covey explorer serve` on it."""
    home = tmp_path_factory.mktemp("schemathesis-home")
    port = free_port()
    with open(home / "chain.log", "ab") as log:
        chain = subprocess.Popen(
            [sys.executable, "-m", "covey.cli", "chain", "serve", "--port", str(port)],
            env=_env(home),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    rpc_url = f"http://127.0.0.1:{port}"
    try:
        wait_for_rpc(rpc_url, timeout_s=120)
        deploy = [sys.executable, "-m", "covey.cli", "chain", "deploy"]
        deployed = subprocess.run(deploy, env=_env(home, rpc_url), capture_output=True, text=True, timeout=300)
        assert deployed.returncode == 0, deployed.stderr
        env = {"COVEY_HOME": str(home), "COVEY_RPC_URL": rpc_url}
        gateway_args = ["gateway", "serve", "--from", "dev5", "--local-price", "0.01"]
        with (
            covey_serve(gateway_args, env=env, ready_path="/health", log_path=home / "gateway.log") as gateway,
            covey_serve(["explorer", "serve"], env=env, ready_path="/", log_path=home / "explorer.log") as explorer,
        ):
            yield {"gateway": gateway[0], "explorer": explorer[0], "rpc_url": rpc_url}
            assert gateway[1].poll() is None, "the gateway died"
            assert explorer[1].poll() is None, "the explorer died"
    finally:
        chain.terminate()
        chain.wait(timeout=30)


def _explorer_schema() -> dict[str, object]:
    from covey.explorer import create_app

    return create_app().openapi()


def run_schema(schema: schemathesis.BaseSchema, base_url: str) -> dict[str, int]:
    """Valid and invalid generated cases of every operation, sent to `base_url`; a 5xx fails with the case.

    Returns how many cases each operation got.
    """
    sent: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        cases = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
        )

        @settings(
            max_examples=CASES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=cases)
        def call(case: schemathesis.Case) -> None:
            label = f"{case.method.upper()} {case.operation.path}"
            sent[label] = sent.get(label, 0) + 1
            case.call_and_validate(base_url=base_url, checks=[not_a_server_error], timeout=30)

        call()
    return sent


@pytest.mark.parametrize("name", ["gateway", "explorer"])
def test_no_generated_request_gets_a_server_error(servers: dict[str, str], name: str) -> None:
    base_url = servers[name]
    if name == "gateway":
        schema = schemathesis.openapi.from_dict(httpx.get(f"{base_url}/openapi.json", timeout=30).json())
    else:
        schema = schemathesis.openapi.from_dict(_explorer_schema())
    sent = run_schema(schema, base_url)
    assert len(sent) >= 4, f"too few operations in the {name}'s schema: {sorted(sent)}"
    # An operation without parameters is one distinct request; those with parameters get the full budget.
    assert max(sent.values()) >= CASES_PER_OPERATION // 2, sent
