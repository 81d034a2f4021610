"""The Gateway chapter of `covey demo`: an agent pays per request to ask the Arena's consensus model questions.

A staked host registers the model in the HostRegistry and serves it; the gateway routes to it, spot-checks
it, and settles each x402 payment on chain; the agent uses the official `openai` client on top of the
official x402 httpx client. At the end: what the agent paid, what the host earned, and the Treasury's
subsidy that makes up the difference.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

import httpx
import uvicorn
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from rich.table import Table

from covey.arena.scoring import metric_value
from covey.chain import Chain, dev_accounts
from covey.chain.arena_deploy import deploy_arena
from covey.chain.deploy import Deployment
from covey.chain.faucet import fund
from covey.chain.hosts_deploy import deploy_hosts
from covey.chain.roles import Role
from covey.demo.language_model import publish_language_model
from covey.demo.runner import StageContext
from covey.gateway.app import GatewayConfig, build_gateway
from covey.gateway.backend import LocalBackend
from covey.gateway.errors import GatewayError
from covey.gateway.host import HostConfig, create_host_app
from covey.gateway.models import ModelCatalog, ServedModel, find_arena, model_id_for_task
from covey.gateway.pricing import quote, usd
from covey.gateway.registry import HostRegistryClient
from covey.gateway.x402.encoding import decode_payment_response
from covey.gateway.x402.mechanisms.evm.exact.server import DEFAULT_MAX_TIMEOUT_S
from covey.ml import load_dataset
from covey.ml.evaluate import get_metric
from covey.storage import open_store

T = TypeVar("T")
COV = 10**18
HOST_PRICE_PER_1K = 20_000  # 0.02 USD per 1,000 tokens
MAX_TOKENS = 60
AGENT_USD = 1_000_000  # 1 USD
TEXT_QUESTIONS = ["Who art thou, and what news?", "Speak of love and of Verona.", "What say you of the king?"]
DIGIT_QUESTIONS = 3


class GatewayContext(StageContext, Protocol):
    """What this chapter needs from the runner: the stage context and the earlier chapters' results."""

    results: dict[str, Any]


def gateway_stage(ctx: GatewayContext) -> dict[str, Any]:
    """Serve the Arena's consensus model through a staked host and the gateway; an agent pays to ask it."""
    chain, deployment, console = ctx.chain, ctx.deployment, ctx.console
    owner = dev_accounts(1)[0]
    store = open_store(ctx.settings.store_url, ctx.settings.data_dir)
    arena_results = ctx.results.get("arena") or {}
    arena = arena_results.get("arena") or find_arena(chain, deployment) or deploy_arena(chain, deployment, owner)
    catalog = ModelCatalog(chain, store, arena)
    model = _consensus_model(ctx, catalog, arena, arena_results.get("taskId"))
    console.print(
        f"serving [bold]{model.model_id}[/]: Arena task {model.task_id}'s consensus model ({model.spec.family} on "
        f"{model.spec.dataset}, trained by {model.trainer[:10]}…, weights sha256 {model.weights_digest[:12]}…; "
        f"validators' consensus on held-out data: {_metric(model)})"
    )

    gateway_account, host_account, agent = _cast(chain, deployment)
    registry = _registry(chain, deployment, owner, gateway_account)
    usd_token = deployment.contract(chain, "USDToken")
    chain.transact(usd_token.functions.faucet(agent.address, AGENT_USD), owner)
    treasury = deployment.address("Treasury")
    watched = {"agent": agent.address, "host": host_account.address, "treasury": treasury}
    before = {name: int(usd_token.functions.balanceOf(address).call()) for name, address in watched.items()}
    subsidy_bps = registry.subsidy_bps()
    price = quote(HOST_PRICE_PER_1K, MAX_TOKENS, subsidy_bps)

    # Nothing the demo runs moves the clock any more, but a chain time-travelled by an older Covey runs ahead
    # of wall time for good (the demo warns at its start); the agent's payments must outlive that skew.
    skew_s = max(0, chain.clock_offset_s())
    config = GatewayConfig(
        settlement="strict",
        arena=arena,
        registry=registry.address,
        spot_check_rate=1.0,
        payout_interval_s=1.0,
        health_interval_s=0.5,
        host_refresh_interval_s=0.5,
        max_timeout_s=DEFAULT_MAX_TIMEOUT_S + skew_s,
    )
    gateway = build_gateway(chain, deployment, store, gateway_account, config, data_dir=ctx.settings.data_dir)
    host_port, gateway_port = _free_port(), _free_port()
    host_config = HostConfig(model.model_id, f"http://127.0.0.1:{host_port}", HOST_PRICE_PER_1K)
    host_app = create_host_app(
        LocalBackend(ModelCatalog(chain, store, arena), price_per_1k_atomic=HOST_PRICE_PER_1K),
        host_account,
        registry,
        host_config,
    )
    with _serving(host_app, host_port), _serving(gateway.app, gateway_port) as gateway_url:
        _wait_for_host(gateway_url, host_account.address)
        console.print(
            f"host {host_account.address[:10]}… staked 100 COV and registered at 0.02 USD per 1k tokens; the "
            f"gateway at {gateway_url}/v1 charges {usd(price.price_atomic):.6f} USD for up to {MAX_TOKENS} tokens "
            f"(host cost {usd(price.host_cost_atomic):.6f}, subsidy {subsidy_bps / 100:.0f}%)"
        )
        questions = _questions(model)
        answers = _run_async(
            ask(gateway_url, agent, chain.chain_id, usd_token.address, model.model_id, [q for q, _ in questions])
        )
    # Leaving the servers drained settlement and paid the host (payment plus subsidy) on chain.
    after = {name: int(usd_token.functions.balanceOf(address).call()) for name, address in watched.items()}
    console.print(_answers_table(model, questions, answers))
    checks = [f"{r.outcome}" for r in gateway.spot_checker.results] if gateway.spot_checker else []
    console.print(f"spot checks (replayed at temperature 0 against the gateway's own copy): {', '.join(checks)}")
    console.print(_money_table(before, after))
    paid = before["agent"] - after["agent"]
    earned = after["host"] - before["host"]
    subsidy = before["treasury"] - after["treasury"]
    console.print(
        f"the agent paid {usd(paid):.6f} USD for {len(answers)} answers; the host earned {usd(earned):.6f} USD "
        f"({usd(subsidy):.6f} of it the Treasury's subsidy): agents pay less than hosting costs, hosts earn it all"
    )
    return {
        "model": model.model_id,
        "kind": model.kind,
        "requests": len(answers),
        "pricePerRequestUsd": usd(price.price_atomic),
        "hostCostPerRequestUsd": usd(price.host_cost_atomic),
        "subsidyBps": subsidy_bps,
        "agentPaidUsd": usd(paid),
        "hostEarnedUsd": usd(earned),
        "subsidyUsd": usd(subsidy),
        "spotChecks": checks,
        "answers": [answer["text"] for answer in answers],
    }


async def ask(
    base_url: str, agent: LocalAccount, chain_id: int, token: str, model_id: str, questions: list[list[dict[str, str]]]
) -> list[dict[str, Any]]:
    """The agent: the official openai client over the official x402 httpx client, paying per request."""
    from openai import APIStatusError, AsyncOpenAI
    from x402 import x402Client
    from x402.http.clients import x402HttpxClient
    from x402.mechanisms.evm.exact import ExactEvmScheme
    from x402.mechanisms.evm.signers import EthAccountSigner

    network = f"eip155:{chain_id}"
    payer = x402Client()
    payer.register(network, ExactEvmScheme(EthAccountSigner(agent)))
    payer.set_spend_controls({"allowed_assets": [{"network": network, "asset": token}]})
    answers: list[dict[str, Any]] = []
    async with x402HttpxClient(payer, timeout=120) as http:
        client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key="paid-with-x402", http_client=http)
        for messages in questions:
            try:
                raw = await client.chat.completions.with_raw_response.create(
                    model=model_id,
                    messages=messages,  # type: ignore[arg-type]
                    max_tokens=MAX_TOKENS,
                    temperature=0.8,
                    seed=len(answers),
                )
            except APIStatusError as exc:
                refused = f"the gateway refused the agent's request {len(answers) + 1}: {_reason(exc)}"
                raise GatewayError(refused) from exc
            reply = raw.parse()
            receipt = decode_payment_response(raw.headers["PAYMENT-RESPONSE"])
            answers.append(
                {
                    "text": reply.choices[0].message.content or "",
                    "transaction": receipt.transaction,
                    "tokens": reply.usage.completion_tokens if reply.usage else 0,
                }
            )
    return answers


def _reason(exc: Any) -> str:
    """The status and the gateway's own reason (its JSON error body), for a one-line message."""
    try:
        body = exc.response.json()
    except ValueError:
        return f"HTTP {exc.status_code}"
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        error = error.get("message") or error.get("code")
    return f"HTTP {exc.status_code}: {error or body}"


def _consensus_model(ctx: GatewayContext, catalog: ModelCatalog, arena: str, task_id: int | None) -> ServedModel:
    """The Arena stage's model when it is servable; else the newest one; else one finalised here and now."""
    models = catalog.refresh()
    wanted = [m for m in models if task_id is not None and m.model_id == model_id_for_task(task_id)]
    if wanted or models:
        return (wanted or models)[0]
    ctx.console.print(
        "no servable consensus model on this chain yet: taking a small Shakespeare model through "
        "an Arena task first (train, commit, reveal, score, finalise)"
    )

    def log(line: str) -> None:
        ctx.console.print(f"  {line}", style="dim", markup=False, highlight=False)

    new_task = publish_language_model(ctx.chain, ctx.deployment, arena, catalog.store, ctx.settings.data_dir, log=log)
    catalog.refresh()
    return catalog.get(model_id_for_task(new_task))


def _metric(model: ServedModel) -> str:
    """The model's consensus score in its metric's own units, e.g. "bits_per_char 3.712"."""
    metric = get_metric(model.spec.metric)
    value = metric_value(model.consensus_score, higher_is_better=metric.higher_is_better, worst=metric.worst)
    return f"{model.spec.metric} {value:.3f}"


def _cast(chain: Chain, deployment: Deployment) -> tuple[LocalAccount, LocalAccount, LocalAccount]:
    """A gateway operator and a host (funded; the host staked for its role) and an agent with no ETH."""
    gateway_account: LocalAccount = Account.create()
    host: LocalAccount = Account.create()
    agent: LocalAccount = Account.create()
    for account in (gateway_account, host):
        fund(chain, deployment, account.address)
    cov, staking = deployment.contract(chain, "CoveyToken"), deployment.contract(chain, "Staking")
    chain.transact(cov.functions.approve(staking.address, 100 * COV), host)
    chain.transact(staking.functions.stake(Role.HOST, 100 * COV), host)
    return gateway_account, host, agent


def _registry(chain: Chain, deployment: Deployment, owner: LocalAccount, gateway: LocalAccount) -> HostRegistryClient:
    """The suite's HostRegistry (deployed now if the suite predates it), with `gateway` allowed."""
    registry = HostRegistryClient.from_deployment(chain, deployment)
    if registry is None:
        return HostRegistryClient(chain, deploy_hosts(chain, deployment, owner, gateways=[gateway.address]))
    chain.transact(registry.contract.functions.setGateway(gateway.address, True), owner)
    return registry


def _questions(model: ServedModel) -> list[tuple[list[dict[str, str]], str]]:
    """Chats to send, each with what a person should expect (the true label for a classifier)."""
    if model.kind == "text":
        return [([{"role": "user", "content": question}], "") for question in TEXT_QUESTIONS]
    data = load_dataset(model.spec.dataset)
    asked = []
    for index in range(len(data) - DIGIT_QUESTIONS, len(data)):
        features = " ".join(f"{value:.3f}" for value in data.inputs[index].reshape(-1))
        system = f"Classify this {model.spec.dataset} example; the user message holds its features."
        messages = [{"role": "system", "content": system}, {"role": "user", "content": features}]
        asked.append((messages, str(int(data.targets[index])) if data.targets is not None else ""))
    return asked


def _answers_table(
    model: ServedModel, questions: list[tuple[list[dict[str, str]], str]], answers: list[dict[str, Any]]
) -> Table:
    table = Table(title=f"The agent's paid questions to {model.model_id}", title_justify="left")
    for column in ("question", "answer", "expected", "tokens", "payment (tx)"):
        table.add_column(column)
    for (messages, expected), answer in zip(questions, answers, strict=True):
        question = messages[-1]["content"]
        question = question if len(question) < 48 else f"{len(question.split())} numbers"
        text = answer["text"].replace("\n", " ⏎ ")
        table.add_row(question, text[:70], expected, str(answer["tokens"]), answer["transaction"][:14] + "…")
    return table


def _money_table(before: dict[str, int], after: dict[str, int]) -> Table:
    table = Table(title="USD balances (the agent pays, the host earns, the Treasury subsidises)", title_justify="left")
    for column, justify in (("account", "left"), ("before", "right"), ("after", "right"), ("change", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for name in before:
        change = after[name] - before[name]
        table.add_row(name, f"{usd(before[name]):,.6f}", f"{usd(after[name]):,.6f}", f"{usd(change):+,.6f}")
    return table


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _serving(app: FastAPI, port: int) -> Iterator[str]:
    """Run `app` under uvicorn on 127.0.0.1:`port` in a thread until the block ends (lifespan included)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name=f"covey-demo-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the demo server on port {port} did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def _wait_for_host(gateway_url: str, host: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        hosts = httpx.get(f"{gateway_url}/health", timeout=10).json().get("hosts", [])
        if any(h["host"] == host and h["healthy"] for h in hosts):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the gateway never saw host {host} healthy")


def _run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` to completion, in a worker thread when the caller already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
