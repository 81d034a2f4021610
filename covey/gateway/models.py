"""Which models the gateway serves: the consensus models of finalised Arena tasks, read from chain and store.

Nothing here is a hard-coded list: `ModelCatalog.refresh()` walks the Arena contract (through its ABI, not
`covey.arena`, since capabilities meet only on chain), reads each finalised task's `consensusModel`, fetches
the task's spec by its `specHash` and the winning weights by their `weightsHash` from the artifact store.
Language models (`char_gpt`) generate text; classifiers (`mlp`, `cnn`) answer with a label.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn
from web3 import Web3

from covey.bounds import UntrustedInputError, loads_json
from covey.chain import Chain, compile_contract
from covey.chain.deploy import Deployment
from covey.chain.structs import with_named_structs
from covey.errors import ChainError, CoveyError, ModelError
from covey.gateway.errors import ModelNotFoundError
from covey.ml import TaskSpec, build_model, load_weights
from covey.ml.weights import read_architecture
from covey.storage import ArtifactStore

log = logging.getLogger(__name__)

ModelKind = Literal["text", "classifier"]
MODEL_KINDS: dict[str, ModelKind] = {"char_gpt": "text", "mlp": "classifier", "cnn": "classifier"}
MAX_SPEC_BYTES = 1 << 20
MODEL_ID_PREFIX = "covey-arena-"
DEFAULT_LOADED_MODELS = 4
ARENA_CODE_PREFIX_HEX = 2_000


@dataclass(frozen=True)
class ServedModel:
    """One servable consensus model: where it came from on chain and what it is."""

    model_id: str
    task_id: int
    spec: TaskSpec
    trainer: str
    weights_digest: str
    """Hex sha256 of the safetensors weights: the Arena's `weightsHash`, the store's address."""
    weights_uri: str
    consensus_score: int
    """The Arena's consensus score, fixed point with 6 decimals."""
    created: int
    """Unix time the task's scoring closed (the model's "created" in `/v1/models`)."""

    @property
    def kind(self) -> ModelKind:
        return MODEL_KINDS[self.spec.family]


def model_id_for_task(task_id: int) -> str:
    """The OpenAI `model` id of an Arena task's consensus model, e.g. `covey-arena-3`."""
    return f"{MODEL_ID_PREFIX}{task_id}"


def find_contract(chain: Chain, deployment: Deployment, name: str) -> str | None:
    """Where contract `name` lives: the deployment manifest, else the on-chain Registry; `None` if nowhere."""
    if name in deployment.contracts:
        return deployment.address(name)
    if "Registry" not in deployment.contracts:
        return None
    registry = deployment.contract(chain, "Registry")
    try:
        if registry.functions.has(name).call():
            return str(registry.functions.get(name).call())
    except Exception as exc:  # an unreachable node reads as "not deployed"; the caller says what is missing
        log.warning("cannot read %s from the Registry: %s", name, exc)
    return None


def find_arena(chain: Chain, deployment: Deployment) -> str | None:
    """The Arena whose models to serve: the manifest's or the Registry's, else the newest Staking module
    whose code is the Arena's (an Arena deployed onto an older suite is recorded in neither)."""
    found = find_contract(chain, deployment, "Arena")
    if found or "Staking" not in deployment.contracts:
        return found
    staking = deployment.contract(chain, "Staking")
    runtime_prefix = None
    events = staking.events.ModuleSet().get_logs(from_block=deployment.blocks.get("Staking", 0))
    for event in reversed(events):
        module = event["args"]["module"]
        if not event["args"]["enabled"] or not staking.functions.isModule(module).call():
            continue
        code = bytes(chain.w3.eth.get_code(module)).hex()
        if not code:
            continue
        if runtime_prefix is None:
            runtime_prefix = compile_contract("Arena").bytecode.removeprefix("0x")
        # Deployed code is the runtime part of the compiled bytecode, followed by the immutables.
        if code[:ARENA_CODE_PREFIX_HEX] in runtime_prefix:
            return str(module)
    return None


def parse_spec(data: bytes) -> TaskSpec:
    """The `TaskSpec` behind a task's `specHash`: a bare spec, or an Arena manifest that wraps one in `spec`."""
    try:
        document = loads_json(data, max_bytes=MAX_SPEC_BYTES, what="the task spec")
    except UntrustedInputError as exc:
        raise ModelError(str(exc)) from exc
    if isinstance(document, dict) and isinstance(document.get("spec"), dict):
        document = document["spec"]
    return TaskSpec.from_bytes(json.dumps(document).encode())


class ModelCatalog:
    """The consensus models on one chain, with their weights loaded on demand (a few at a time).

    Thread-safe; `refresh` and `load` block on the chain and the store, so async callers run them on a
    worker thread. A finalised task never changes, so each is read once and remembered.
    """

    def __init__(
        self,
        chain: Chain,
        store: ArtifactStore,
        arena_address: str | None,
        *,
        max_loaded: int = DEFAULT_LOADED_MODELS,
    ) -> None:
        self.chain = chain
        self.store = store
        self.arena = chain.contract("Arena", arena_address) if arena_address else None
        self._arena_structs = with_named_structs(self.arena) if self.arena is not None else None
        self.max_loaded = max_loaded
        self._lock = threading.Lock()
        self._models: dict[str, ServedModel] = {}
        self._settled: set[int] = set()  # tasks already judged: servable or not, they never change
        self._loaded: OrderedDict[str, nn.Module] = OrderedDict()

    # -- discovery ------------------------------------------------------------------------------------

    def refresh(self) -> list[ServedModel]:
        """Read tasks finalised since the last refresh; return every servable model, newest task first."""
        if self.arena is None:
            return []
        count = int(self.arena.functions.taskCount().call())
        for task_id in range(1, count + 1):
            if task_id in self._settled:
                continue
            found = self._discover(task_id)
            if found is None:
                continue
            with self._lock:
                self._settled.add(task_id)
                if found is not False:
                    self._models[found.model_id] = found
        return self.models()

    def _discover(self, task_id: int) -> ServedModel | Literal[False] | None:
        """The task's model; `None` while it is not final yet, `False` when it never will be servable."""
        assert self.arena is not None and self._arena_structs is not None
        task = self._arena_structs.functions.task(task_id).call()
        if not task.finalized:
            return None
        if not task.hasWinner:
            return False
        try:
            trainer, weights_hash, uri, score = self.chain.call(self.arena.functions.consensusModel(task_id))
            spec = parse_spec(self.store.get(bytes(task.specHash).hex(), max_bytes=MAX_SPEC_BYTES))
        except ChainError:
            return None  # a node hiccup: try again on the next refresh
        except CoveyError as exc:  # the spec is missing from our store or malformed: not servable here
            log.warning("Arena task %d: its consensus model cannot be served: %s", task_id, exc)
            return None
        if spec.family not in MODEL_KINDS:
            log.info("Arena task %d: model family %s is not servable", task_id, spec.family)
            return False
        return ServedModel(
            model_id=model_id_for_task(task_id),
            task_id=task_id,
            spec=spec,
            trainer=Web3.to_checksum_address(trainer),
            weights_digest=bytes(weights_hash).hex(),
            weights_uri=str(uri),
            consensus_score=int(score),
            created=int(task.scoreRevealDeadline),
        )

    def models(self) -> list[ServedModel]:
        """The models found so far, newest task first."""
        with self._lock:
            return sorted(self._models.values(), key=lambda model: -model.task_id)

    def get(self, model_id: str) -> ServedModel:
        """The model called `model_id`; `ModelNotFoundError` when no finalised task has it."""
        with self._lock:
            found = self._models.get(model_id)
        if found is None:
            raise ModelNotFoundError(f"The model `{model_id}` does not exist or is not served here.", param="model")
        return found

    def add(self, model: ServedModel) -> None:
        """Serve a model found elsewhere (a host told about one task, tests); the chain stays the source."""
        with self._lock:
            self._models[model.model_id] = model
            self._settled.add(model.task_id)

    # -- weights --------------------------------------------------------------------------------------

    def load(self, model_id: str) -> nn.Module:
        """The model's network with the consensus weights (hash-checked by the store), in eval mode."""
        with self._lock:
            cached = self._loaded.get(model_id)
            if cached is not None:
                self._loaded.move_to_end(model_id)
                return cached
        served = self.get(model_id)
        network = load_network(self.store, served)
        with self._lock:
            self._loaded[model_id] = network
            while len(self._loaded) > self.max_loaded:
                self._loaded.popitem(last=False)
        return network


def load_network(store: ArtifactStore, served: ServedModel) -> nn.Module:
    """Build `served`'s network and load its weights from `store`.

    A submission may resize its model within the task's family (the weights name their own architecture in
    their metadata); only the family is taken from the spec when the weights do not say.
    """
    data = store.get(served.weights_digest, max_bytes=served.spec.size_limit_bytes)
    family, config = read_architecture(data, max_bytes=served.spec.size_limit_bytes)
    if family is not None and family != served.spec.family:
        raise ModelError(f"{served.model_id}: the weights are a {family}, the task asks for a {served.spec.family}")
    architecture: dict[str, Any] = config if config is not None else dict(served.spec.architecture)
    network = load_weights(build_model(served.spec.family, architecture), data)
    network.eval()
    return network
