"""SIGKILL a staked host mid-stream while the gateway routes a paid stream to it.

Two `covey host serve` processes serve the world's model: A is the cheaper and paces its answers (so a
stream is still running when it dies), B is dearer. A gateway with strict settlement routes to the
cheapest healthy host. The story, as an agent and the hosts see it:

1. The agent pays for a stream; A serves it; A is SIGKILLed after the first piece. The stream does not
   hang: the gateway continues it on B (the next host extends the prompt plus the text already sent), and
   it ends with `[DONE]` within `max_tokens`. The agent paid once, the price quoted when it asked.
2. The gateway marks A unhealthy and sends the next paid request to B.
3. A is started again (same account, a new port): it re-registers, the gateway probes it healthy, and
   the next paid request goes back to A, the cheapest.
4. The documented rule when no host can finish: with B stopped, A is killed mid-stream again. The stream
   ends with an OpenAI error event, not a hang, and the agent was charged, because strict settlement
   happens before the first byte of a stream (`covey.gateway.openai_api`). With no host left, the next
   request is refused with 503 before any payment is asked for.
5. Hosts are paid through the HostRegistry for each settled payment exactly once, plus the subsidy.

Which host earns a stream that failed over: the one that finished the answer (B), not the one that sent
its first piece and died (A); the credit waits for the stream's end even when strict settlement came first.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount

from covey.chain import dev_accounts
from covey.gateway.app import Gateway, GatewayConfig, build_gateway
from covey.gateway.pricing import subsidy_for
from covey.gateway.registry import HostRegistryClient
from covey.gateway.x402.encoding import decode_payment_required, encode_header
from tests.support import serve_in_thread
from tests.x402_scaffolding.client import ExactEvmClient

from .conftest import Service, World, host_process, stake_host, wait_for

pytestmark = pytest.mark.e2e

SLOW_TOKENS_PER_S = 8.0
MAX_TOKENS = 40
STREAM_END_TIMEOUT_S = 60.0
PAID = "PAYMENT-SIGNATURE"
HOST = "X-Covey-Host"


@dataclass
class StreamSeen:
    """What an agent reading a paid stream saw."""

    status: int
    host: str
    text: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    seconds_after_kill: float = 0.0

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [event["error"] for event in self.events if "error" in event]

    @property
    def usage(self) -> dict[str, Any] | None:
        return next((event["usage"] for event in self.events if event.get("usage")), None)


@dataclass
class Story:
    """Everything the agent, the hosts and the gateway did, for the tests to check."""

    a: LocalAccount
    b: LocalAccount
    agent: LocalAccount
    funds: int
    failover: StreamSeen
    failover_price: int
    charged_after_failover: int
    authorizations_after_failover: int
    a_marked_unhealthy: bool
    next_host: str
    after_restart_host: str
    stranded: StreamSeen
    stranded_price: int
    charged_after_stranded: int
    refused_without_hosts: int
    prices: list[int]
    earned_from_failover: dict[str, int]
    host_earnings: dict[str, int]
    subsidy_bps: int


class Agent:
    """An agent paying the gateway with x402, one request at a time."""

    def __init__(self, url: str, world: World, account: LocalAccount) -> None:
        self.url, self.world, self.client = url, world, ExactEvmClient(account)
        self.prices: list[int] = []

    def body(self, stream: bool) -> dict[str, Any]:
        body = {"model": self.world.model_id, "prompt": "JULIET:\n", "max_tokens": MAX_TOKENS, "temperature": 0}
        return {**body, "stream": True, "stream_options": {"include_usage": True}} if stream else body

    def _payment(self, http: httpx.Client, body: dict[str, Any]) -> dict[str, str] | httpx.Response:
        asked = http.post(f"{self.url}/v1/completions", json=body)
        if asked.status_code != 402:
            return asked
        requirements = decode_payment_required(asked.headers["PAYMENT-REQUIRED"]).accepts[0]
        self.prices.append(int(requirements.amount))
        return {PAID: encode_header(self.client.pay(requirements))}

    def complete(self) -> httpx.Response:
        with httpx.Client(timeout=60) as http:
            headers = self._payment(http, self.body(stream=False))
            if isinstance(headers, httpx.Response):
                return headers
            return http.post(f"{self.url}/v1/completions", json=self.body(stream=False), headers=headers)

    def stream(self, on_first_piece: Callable[[], None]) -> StreamSeen:
        """Read a paid stream to its end; call `on_first_piece` once the first text arrives."""
        killed_at = 0.0
        with httpx.Client(timeout=httpx.Timeout(30, connect=5)) as http:
            headers = self._payment(http, self.body(stream=True))
            assert isinstance(headers, dict), headers.text
            with http.stream("POST", f"{self.url}/v1/completions", json=self.body(stream=True), headers=headers) as r:
                seen = StreamSeen(r.status_code, r.headers.get(HOST, ""))
                deadline = time.monotonic() + STREAM_END_TIMEOUT_S
                for line in r.iter_lines():
                    assert time.monotonic() < deadline, "the stream did not end"
                    if not line.startswith("data: "):
                        continue
                    data = line.removeprefix("data: ")
                    if data == "[DONE]":
                        seen.done = True
                        break
                    event = json.loads(data)
                    seen.events.append(event)
                    pieces = "".join(choice.get("text") or "" for choice in event.get("choices", []))
                    seen.text += pieces
                    if pieces and not killed_at:
                        on_first_piece()
                        killed_at = time.monotonic()
        seen.seconds_after_kill = time.monotonic() - killed_at if killed_at else 0.0
        return seen


def routable(url: str) -> dict[str, bool]:
    hosts = httpx.get(f"{url}/health", timeout=10).json().get("hosts", [])
    return {host["host"]: bool(host["healthy"] and not host["banned"]) for host in hosts}


@pytest.fixture(scope="module")
def gateway(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, str]]:
    """A strict gateway routing to the world's staked hosts, probing them twice a second."""
    config = GatewayConfig(
        settlement="strict",
        arena=world.arena.address,
        registry=world.registry.address,
        spot_check_rate=0.0,
        payout_interval_s=0.5,
        health_interval_s=0.5,
        host_refresh_interval_s=0.5,
    )
    data_dir = tmp_path_factory.mktemp("gateway-data")
    built = build_gateway(world.chain, world.deployment, world.store, world.gateway_account, config, data_dir=data_dir)
    with serve_in_thread(built.app) as url:
        yield built, url


@pytest.fixture(scope="module")
def story(world: World, gateway: tuple[Gateway, str], tmp_path_factory: pytest.TempPathFactory) -> Story:
    _built, url = gateway
    logs = tmp_path_factory.mktemp("host-logs")
    names = {"a": "dev5", "b": "dev6"}
    a, b = (dev_accounts(7)[int(name[3:])] for name in names.values())
    for host in (a, b):
        stake_host(world, host)
    agent_account = world.payer()
    funds = world.usd_balance(agent_account.address)
    agent = Agent(url, world, agent_account)

    def charged() -> int:
        return funds - world.usd_balance(agent_account.address)

    def authorizations() -> int:
        events = world.usd.events.AuthorizationUsed().get_logs(from_block=0)
        return sum(1 for e in events if e["args"]["authorizer"] == agent_account.address)

    subsidy_bps = HostRegistryClient(world.chain, world.registry.address).subsidy_bps()

    def host_earnings(at_least: int) -> dict[str, int] | None:
        """What each host holds in USD (all of it earned here), once the total reaches `at_least`."""
        earned = {str(host.address): world.usd_balance(host.address) for host in (a, b)}
        return earned if sum(earned.values()) >= at_least else None

    def start_a(log: str) -> Any:
        return host_process(world, names["a"], a, logs / log, price="0.01", tokens_per_s=SLOW_TOKENS_PER_S)

    with (
        start_a("a-1.log") as (first_a, _),
        host_process(world, names["b"], b, logs / "b.log", price="0.03") as (host_b, _),
    ):
        wait_for(lambda: routable(url) == {a.address: True, b.address: True}, "both hosts to be routable", 30)

        # 1. A dies mid-stream; B finishes the answer.
        failover = agent.stream(first_a.sigkill)
        failover_charged, failover_authorizations = charged(), authorizations()
        earned_from_failover = wait_for(lambda: host_earnings(1), "the failed-over stream's payout", 30)

        # 2. The gateway stopped routing to A; the next request goes to B.
        a_unhealthy = wait_for(lambda: routable(url).get(a.address) is False, "A to be marked unhealthy", 10)
        next_reply = agent.complete()
        assert next_reply.status_code == 200, next_reply.text

        # 3. A comes back and is the cheapest again.
        with start_a("a-2.log") as (second_a, _):
            wait_for(lambda: routable(url).get(a.address), "the restarted A to be routable", 30)
            back_reply = agent.complete()
            assert back_reply.status_code == 200, back_reply.text

            # 4. No host left to finish: B stops (and deregisters), then A dies mid-stream again.
            stop(world, host_b, b)
            wait_for(lambda: b.address not in routable(url), "B to leave the registry", 30)
            charged_before = charged()
            stranded = agent.stream(second_a.sigkill)
            stranded_charged = charged() - charged_before
            wait_for(lambda: not any(routable(url).values()), "no host to be routable", 10)
            refused = agent.complete()

        # 5. Every settled payment reaches the hosts once, with the subsidy.
        owed = sum(price + subsidy_for(price, subsidy_bps) for price in agent.prices[:4])
        earnings = wait_for(lambda: host_earnings(owed), "the hosts' payouts", 30)
    return Story(
        a=a,
        b=b,
        agent=agent_account,
        funds=funds,
        failover=failover,
        failover_price=agent.prices[0],
        charged_after_failover=failover_charged,
        authorizations_after_failover=failover_authorizations,
        a_marked_unhealthy=bool(a_unhealthy),
        next_host=next_reply.headers.get(HOST, ""),
        after_restart_host=back_reply.headers.get(HOST, ""),
        stranded=stranded,
        stranded_price=agent.prices[3],
        charged_after_stranded=stranded_charged,
        refused_without_hosts=refused.status_code,
        prices=agent.prices,
        earned_from_failover=earned_from_failover,
        host_earnings=earnings,
        subsidy_bps=subsidy_bps,
    )


def stop(world: World, host: Service, account: LocalAccount) -> None:
    """A graceful stop (SIGTERM): the host deregisters on the way out."""
    host.stop()
    assert not world.registry.functions.isRegistered(account.address).call(), host.tail()


def test_a_host_killed_mid_stream_is_routed_around_paid_for_once_and_used_again(story: Story, world: World) -> None:
    a, b = story.a.address, story.b.address
    # 1. The stream started on A, did not hang, and finished on B within max_tokens.
    failover = story.failover
    assert failover.status == 200 and failover.host == a
    assert failover.done and not failover.errors, failover.events
    assert failover.seconds_after_kill < STREAM_END_TIMEOUT_S
    usage = failover.usage
    assert usage is not None and 0 < usage["completion_tokens"] <= MAX_TOKENS
    assert failover.text and len(failover.text.encode()) <= MAX_TOKENS
    # Paid once, at the price quoted when the agent asked (A's, the cheapest then).
    assert story.authorizations_after_failover == 1
    assert story.charged_after_failover == story.failover_price

    # 2. A is marked unhealthy; B serves the next request. 3. The restarted A serves again.
    assert story.a_marked_unhealthy
    assert story.next_host == b
    assert story.after_restart_host == a

    # 4. Nobody left to finish: an error event ends the stream, and strict settlement had charged it.
    stranded = story.stranded
    assert stranded.status == 200 and stranded.host == a
    assert not stranded.done and len(stranded.errors) == 1, stranded.events
    assert stranded.errors[0]["type"] == "server_error" and "no host" in stranded.errors[0]["message"]
    assert stranded.seconds_after_kill < STREAM_END_TIMEOUT_S
    assert story.charged_after_stranded == story.stranded_price
    assert story.refused_without_hosts == 503
    assert world.usd_balance(story.agent.address) == story.funds - sum(story.prices[:4])
    assert len(story.prices) == 4  # the refused request was never priced: nothing to pay

    # 5. The hosts were paid for the four settled payments, each once, with the subsidy.
    paid_to_hosts = sum(story.host_earnings.values())
    assert paid_to_hosts == sum(price + subsidy_for(price, story.subsidy_bps) for price in story.prices)
    print(
        f"\nhost kill: failover stream ended {failover.seconds_after_kill:.1f}s after the kill, stranded one "
        f"{stranded.seconds_after_kill:.1f}s after; prices {story.prices}; hosts earned {story.host_earnings}, "
        f"of which from the failed-over stream {story.earned_from_failover}"
    )


def test_the_host_that_finished_a_failed_over_stream_earns_from_it(story: Story) -> None:
    earned = story.earned_from_failover
    assert earned[story.b.address] > 0, earned
    assert earned[story.a.address] < story.failover_price + subsidy_for(story.failover_price, story.subsidy_bps)
