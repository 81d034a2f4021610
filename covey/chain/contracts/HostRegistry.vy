# pragma version ~=0.4.3
"""
@title Covey HostRegistry (inference hosts)
@custom:contract-name HostRegistry
@license Apache-2.0
@notice Inference hosts staked for the host role (2) register what they
        serve (an OpenAI model id), where (an endpoint URL) and at what
        price (USD atomic units per 1,000 tokens), and heartbeat while they
        serve. Agents pay the gateway's x402 requirements to this contract;
        a gateway passes each payment on to the host that served the request
        and the Treasury adds the subsidy, `paid * subsidyBps / (10000 -
        subsidyBps)`, so a host earns its full price while agents pay
        `1 - subsidyBps` of it. A gateway that catches a host serving a
        different model (it replays a request at temperature 0 and compares)
        reports the host's own signed answer; the host is slashed through
        Staking and removed.
        Functions:
        - hosts: `register`, `heartbeat`, `deregister`,
        - gateways: `payHosts`, `reportMismatch`,
        - owner: `setGateway`, `setSubsidy`, `setParams`, `transfer_ownership`,
          `renounce_ownership`,
        - views: `hosts`, `host`, `hostCount`, `isRegistered`, `isLive`,
          `subsidyFor`, `answerDigest`, `isGateway`, `subsidyBps`,
          `minStake`, `slashAmount`, `heartbeatTimeout`, `usd`, `staking`,
          `treasury`, `owner`.
@dev Gateways are trusted to attribute payments to the hosts that earned
     them (they can only pass on what agents paid in); slashing needs the
     host's signature over the answer it gave, so a gateway cannot slash a
     host for an answer the host never signed. Anyone can audit a report:
     the event names the request and both answers' hashes, and temperature-0
     generation with the consensus weights is deterministic.
"""


from ethereum.ercs import IERC20

from snekmate.auth import ownable
initializes: ownable

exports: (
    ownable.owner,
    ownable.transfer_ownership,
    ownable.renounce_ownership,
)


# ------------------------------------------------------------------ interfaces


interface IStaking:
    def effectiveStake(operator: address, role: uint8) -> uint256: view
    def slash(account: address, role: uint8, amount: uint256, reason: String[64]) -> uint256: nonpayable


interface ITreasury:
    def pay(token: address, to: address, amount: uint256): nonpayable
    def allowance(module: address, token: address) -> uint256: view


# ------------------------------------------------------------------ constants


# @dev The staking role of inference hosts (`covey.chain.roles.Role.HOST`).
ROLE_HOST: public(constant(uint8)) = 2

# @dev The most hosts registered at once; bounds `hosts()`.
MAX_HOSTS: public(constant(uint256)) = 128

# @dev The most payouts one `payHosts` call makes.
MAX_PAYOUTS: public(constant(uint256)) = 64

# @dev The denominator of `subsidyBps`.
BPS: public(constant(uint256)) = 10_000

# @dev The highest subsidy rate (90%): an agent always pays something.
MAX_SUBSIDY_BPS: public(constant(uint256)) = 9_000

# @dev The reason `reportMismatch` passes to `Staking.slash`.
REASON_MISMATCH: constant(String[64]) = "hosts: served a different model"

# @dev Half the secp256k1 order: signatures with a larger `s` are malleable copies and refused.
_HALF_N: constant(uint256) = 57896044618658097711785492504343953926418782139537452191302581570759080747168


# ------------------------------------------------------------------ types


# @dev One registration: what a host serves, where, at what price, and when it last said it is alive.
struct Host:
    modelId: String[64]
    endpoint: String[256]
    pricePer1kTokens: uint256
    registeredAt: uint256
    lastHeartbeat: uint256


# @dev What `hosts()` returns for each registered host, with its current effective stake.
struct HostView:
    host: address
    modelId: String[64]
    endpoint: String[256]
    pricePer1kTokens: uint256
    registeredAt: uint256
    lastHeartbeat: uint256
    stake: uint256


# ------------------------------------------------------------------ events


# @dev `host` registered (or updated) what it serves, where and at what price.
event HostRegistered:
    host: indexed(address)
    modelId: String[64]
    endpoint: String[256]
    pricePer1kTokens: uint256


# @dev `host` is still serving.
event HostHeartbeat:
    host: indexed(address)
    at: uint256


# @dev `host` left the registry: it deregistered, or was removed for a mismatch.
event HostRemoved:
    host: indexed(address)
    reason: String[64]


# @dev `gateway` passed `amount` of paid USD to `host`, and the Treasury added `subsidy`.
event HostPaid:
    host: indexed(address)
    gateway: indexed(address)
    amount: uint256
    subsidy: uint256


# @dev `gateway` proved that `host` answered `requestHash` with `observedHash`
# where the consensus model answers `expectedHash`; `slashed` COV were taken.
event MismatchReported:
    host: indexed(address)
    gateway: indexed(address)
    requestHash: bytes32
    expectedHash: bytes32
    observedHash: bytes32
    slashed: uint256


# @dev The owner allowed (`enabled`) or disallowed a gateway.
event GatewaySet:
    gateway: indexed(address)
    enabled: bool


# @dev The owner set the subsidy rate.
event SubsidySet:
    subsidy_bps: uint256


# @dev The owner set the host parameters.
event ParamsSet:
    min_stake: uint256
    slash_amount: uint256
    heartbeat_timeout_s: uint256


# ------------------------------------------------------------------ storage


# @dev The payment token (USD, 6 decimals): agents pay it in, hosts are paid it out.
usd: public(immutable(IERC20))

# @dev Where host stake lives and is slashed (this contract must be a Staking module).
staking: public(immutable(IStaking))

# @dev Who pays the subsidy (this contract needs a USD allowance there).
treasury: public(immutable(ITreasury))

# @dev The effective host-role stake (COV) a host needs to register and heartbeat.
minStake: public(uint256)

# @dev The COV slashed from a host caught serving a different model.
slashAmount: public(uint256)

# @dev Seconds a registration stays live after its last heartbeat.
heartbeatTimeout: public(uint256)

# @dev The share of a host's price the Treasury pays, in basis points.
subsidyBps: public(uint256)

# @dev Gateways allowed to pass payments on and report mismatches.
isGateway: public(HashMap[address, bool])

# @dev Each registered host's registration.
_hosts: HashMap[address, Host]

# @dev Registered hosts, in no particular order (removal swaps with the last).
_list: DynArray[address, MAX_HOSTS]

# @dev 1 + the host's position in `_list`; 0 when not registered.
_position: HashMap[address, uint256]

# @dev Reports already made, by `keccak256(host, requestHash)`: one slash per piece of evidence.
_reported: HashMap[bytes32, bool]


# ------------------------------------------------------------------ setup


@deploy
def __init__(
    usd_: IERC20,
    staking_: IStaking,
    treasury_: ITreasury,
    min_stake: uint256,
    slash_amount: uint256,
    heartbeat_timeout_s: uint256,
    subsidy_bps: uint256,
):
    """
    @param usd_ The payment token.
    @param staking_ The Staking contract (register this contract as a module there).
    @param treasury_ The Treasury (grant this contract a USD allowance there).
    @param min_stake Effective host stake needed to register, in COV wei.
    @param slash_amount COV wei slashed for a proven mismatch.
    @param heartbeat_timeout_s Seconds a registration stays live without a heartbeat.
    @param subsidy_bps The initial subsidy rate.
    """
    ownable.__init__()
    usd = usd_
    staking = staking_
    treasury = treasury_
    self._set_params(min_stake, slash_amount, heartbeat_timeout_s)
    self._set_subsidy(subsidy_bps)


# ------------------------------------------------------------------ owner


@external
def setGateway(gateway: address, enabled: bool):
    """
    @notice Allow or disallow `gateway` to pay hosts and report mismatches.
    """
    ownable._check_owner()
    assert gateway != empty(address), "hosts: gateway is the zero address"
    self.isGateway[gateway] = enabled
    log GatewaySet(gateway=gateway, enabled=enabled)


@external
def setSubsidy(subsidy_bps: uint256):
    """
    @notice Set the share of hosts' prices the Treasury pays (at most `MAX_SUBSIDY_BPS`).
    """
    ownable._check_owner()
    self._set_subsidy(subsidy_bps)


@external
def setParams(min_stake: uint256, slash_amount: uint256, heartbeat_timeout_s: uint256):
    """
    @notice Set the minimum stake, the mismatch slash and the heartbeat timeout.
    """
    ownable._check_owner()
    self._set_params(min_stake, slash_amount, heartbeat_timeout_s)


# ------------------------------------------------------------------ hosts


@external
def register(modelId: String[64], endpoint: String[256], pricePer1kTokens: uint256):
    """
    @notice Register (or update) the caller as a host of `modelId` at
            `endpoint`, charging `pricePer1kTokens` USD atomic units per
            1,000 tokens. Needs `minStake` effective host stake. Counts as a heartbeat.
    """
    assert len(modelId) > 0, "hosts: empty model id"
    assert len(endpoint) > 0, "hosts: empty endpoint"
    assert pricePer1kTokens > 0, "hosts: zero price"
    self._check_stake(msg.sender)
    registered_at: uint256 = self._hosts[msg.sender].registeredAt
    if self._position[msg.sender] == 0:
        assert len(self._list) < MAX_HOSTS, "hosts: registry full"
        self._list.append(msg.sender)
        self._position[msg.sender] = len(self._list)
        registered_at = block.timestamp
    self._hosts[msg.sender] = Host(
        modelId=modelId,
        endpoint=endpoint,
        pricePer1kTokens=pricePer1kTokens,
        registeredAt=registered_at,
        lastHeartbeat=block.timestamp,
    )
    log HostRegistered(host=msg.sender, modelId=modelId, endpoint=endpoint, pricePer1kTokens=pricePer1kTokens)


@external
def heartbeat():
    """
    @notice Say the caller is still serving; needs the stake still in place.
    """
    assert self._position[msg.sender] != 0, "hosts: not registered"
    self._check_stake(msg.sender)
    self._hosts[msg.sender].lastHeartbeat = block.timestamp
    log HostHeartbeat(host=msg.sender, at=block.timestamp)


@external
def deregister():
    """
    @notice Leave the registry (a host shutting down).
    """
    assert self._position[msg.sender] != 0, "hosts: not registered"
    self._remove(msg.sender, "hosts: deregistered")


# ------------------------------------------------------------------ gateways


@external
@nonreentrant
def payHosts(hosts_: DynArray[address, MAX_PAYOUTS], amounts: DynArray[uint256, MAX_PAYOUTS]):
    """
    @notice Pass `amounts[i]` of the USD agents paid in to `hosts_[i]`, and
            have the Treasury add the subsidy on top (as much of it as the
            Treasury's allowance and balance still cover).
    """
    assert self.isGateway[msg.sender], "hosts: caller is not a gateway"
    assert len(hosts_) == len(amounts), "hosts: length mismatch"
    rate: uint256 = self.subsidyBps
    for i: uint256 in range(len(hosts_), bound=MAX_PAYOUTS):
        to: address = hosts_[i]
        amount: uint256 = amounts[i]
        assert to != empty(address), "hosts: pay to the zero address"
        assert amount > 0, "hosts: zero amount"
        subsidy: uint256 = min(amount * rate // (BPS - rate), self._subsidy_room())
        log HostPaid(host=to, gateway=msg.sender, amount=amount, subsidy=subsidy)
        assert extcall usd.transfer(to, amount, default_return_value=True), "hosts: transfer failed"
        if subsidy > 0:
            extcall treasury.pay(usd.address, to, subsidy)


@external
@nonreentrant
def reportMismatch(
    host: address, requestHash: bytes32, expectedHash: bytes32, observedHash: bytes32, signature: Bytes[65]
) -> uint256:
    """
    @notice Slash `host` for answering `requestHash` with `observedHash` (it
            signed `answerDigest(host, requestHash, observedHash)`) where the
            consensus model answers `expectedHash`; remove it from the registry.
    @return uint256 The COV slashed.
    """
    assert self.isGateway[msg.sender], "hosts: caller is not a gateway"
    assert expectedHash != observedHash, "hosts: the answers match"
    assert self._recover(self._answer_digest(host, requestHash, observedHash), signature) == host, "hosts: not signed by the host"
    evidence: bytes32 = keccak256(abi_encode(host, requestHash))
    assert not self._reported[evidence], "hosts: already reported"
    self._reported[evidence] = True
    if self._position[host] != 0:
        self._remove(host, REASON_MISMATCH)
    slashed: uint256 = extcall staking.slash(host, ROLE_HOST, self.slashAmount, REASON_MISMATCH)
    log MismatchReported(
        host=host,
        gateway=msg.sender,
        requestHash=requestHash,
        expectedHash=expectedHash,
        observedHash=observedHash,
        slashed=slashed,
    )
    return slashed


# ------------------------------------------------------------------ views


@external
@view
def hosts() -> DynArray[HostView, MAX_HOSTS]:
    """
    @notice Every registered host with its registration and effective stake (live or not).
    """
    views: DynArray[HostView, MAX_HOSTS] = []
    for account: address in self._list:
        entry: Host = self._hosts[account]
        views.append(
            HostView(
                host=account,
                modelId=entry.modelId,
                endpoint=entry.endpoint,
                pricePer1kTokens=entry.pricePer1kTokens,
                registeredAt=entry.registeredAt,
                lastHeartbeat=entry.lastHeartbeat,
                stake=staticcall staking.effectiveStake(account, ROLE_HOST),
            )
        )
    return views


@external
@view
def host(account: address) -> Host:
    """
    @notice `account`'s registration (all zero when not registered).
    """
    return self._hosts[account]


@external
@view
def hostCount() -> uint256:
    """
    @notice How many hosts are registered.
    """
    return len(self._list)


@external
@view
def isRegistered(account: address) -> bool:
    """
    @notice Whether `account` is registered (live or not).
    """
    return self._position[account] != 0


@external
@view
def isLive(account: address) -> bool:
    """
    @notice Registered, heartbeat within `heartbeatTimeout`, and stake at or above `minStake`.
    """
    if self._position[account] == 0:
        return False
    if block.timestamp > self._hosts[account].lastHeartbeat + self.heartbeatTimeout:
        return False
    return staticcall staking.effectiveStake(account, ROLE_HOST) >= self.minStake


@external
@view
def subsidyFor(amount: uint256) -> uint256:
    """
    @notice The subsidy `payHosts` adds to a payout of `amount` at today's rate (before the Treasury's limits).
    """
    return amount * self.subsidyBps // (BPS - self.subsidyBps)


@external
@view
def answerDigest(host: address, requestHash: bytes32, outputHash: bytes32) -> bytes32:
    """
    @notice What a host signs with each answer (EIP-191 personal message over
            `keccak256(abi_encode(registry, chainId, host, requestHash, outputHash))`).
    """
    return self._answer_digest(host, requestHash, outputHash)


# ------------------------------------------------------------------ internals


@internal
@view
def _answer_digest(host: address, requestHash: bytes32, outputHash: bytes32) -> bytes32:
    inner: bytes32 = keccak256(abi_encode(self, chain.id, host, requestHash, outputHash))
    return keccak256(concat(b"\x19Ethereum Signed Message:\n32", inner))


@internal
@pure
def _recover(digest: bytes32, signature: Bytes[65]) -> address:
    """
    @dev The signer of `digest`, or the zero address for a malformed or malleable signature.
    """
    if len(signature) != 65:
        return empty(address)
    r: uint256 = convert(extract32(signature, 0), uint256)
    s: uint256 = convert(extract32(signature, 32), uint256)
    v: uint256 = convert(slice(signature, 64, 1), uint256)
    if v < 27:
        v += 27
    if (v != 27 and v != 28) or s > _HALF_N or r == 0 or s == 0:
        return empty(address)
    return ecrecover(digest, v, r, s)


@internal
@view
def _check_stake(account: address):
    assert staticcall staking.effectiveStake(account, ROLE_HOST) >= self.minStake, "hosts: stake below minimum"


@internal
@view
def _subsidy_room() -> uint256:
    """
    @dev How much subsidy the Treasury can still pay: its allowance to us, capped by its balance.
    """
    allowed: uint256 = staticcall treasury.allowance(self, usd.address)
    return min(allowed, staticcall usd.balanceOf(treasury.address))


@internal
def _remove(account: address, reason: String[64]):
    position: uint256 = self._position[account]
    last: address = self._list[len(self._list) - 1]
    self._list[position - 1] = last
    self._position[last] = position
    self._list.pop()
    self._position[account] = 0
    self._hosts[account] = empty(Host)
    log HostRemoved(host=account, reason=reason)


@internal
def _set_subsidy(subsidy_bps: uint256):
    assert subsidy_bps <= MAX_SUBSIDY_BPS, "hosts: subsidy above max"
    self.subsidyBps = subsidy_bps
    log SubsidySet(subsidy_bps=subsidy_bps)


@internal
def _set_params(min_stake: uint256, slash_amount: uint256, heartbeat_timeout_s: uint256):
    assert heartbeat_timeout_s > 0, "hosts: zero heartbeat timeout"
    self.minStake = min_stake
    self.slashAmount = slash_amount
    self.heartbeatTimeout = heartbeat_timeout_s
    log ParamsSet(min_stake=min_stake, slash_amount=slash_amount, heartbeat_timeout_s=heartbeat_timeout_s)
