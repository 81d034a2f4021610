# pragma version ~=0.4.3
"""
@title Covey Registry
@custom:contract-name Registry
@license Apache-2.0
@notice A name -> address book the deployer writes the Covey suite into, so
        a deployment can be read from the chain itself.
        Functions:
        - owner: `set`, `transfer_ownership`, `renounce_ownership`,
        - views: `get`, `has`, `names`, `owner`.
"""


from snekmate.auth import ownable
initializes: ownable

exports: (
    ownable.owner,
    ownable.transfer_ownership,
    ownable.renounce_ownership,
)


# ------------------------------------------------------------------ events


# @dev The owner pointed `name` at `addr` (`previous` is empty for a new name).
event AddressSet:
    name: String[32]
    addr: indexed(address)
    previous: indexed(address)


# ------------------------------------------------------------------ storage


# @dev How many names the registry holds; bounds `names()`.
MAX_NAMES: public(constant(uint256)) = 64

# @dev Every name ever set, in the order first set.
_names: DynArray[String[32], MAX_NAMES]

# @dev The address behind each name.
_addresses: HashMap[String[32], address]


# ------------------------------------------------------------------ setup


@deploy
def __init__():
    ownable.__init__()


# ------------------------------------------------------------------ owner


@external
def set(name: String[32], addr: address):
    """
    @notice Point `name` at `addr` (a new name or a replacement).
    """
    ownable._check_owner()
    assert len(name) > 0, "registry: empty name"
    assert addr != empty(address), "registry: zero address"
    previous: address = self._addresses[name]
    if previous == empty(address):
        assert len(self._names) < MAX_NAMES, "registry: too many names"
        self._names.append(name)
    self._addresses[name] = addr
    log AddressSet(name=name, addr=addr, previous=previous)


# ------------------------------------------------------------------ views


@external
@view
def get(name: String[32]) -> address:
    """
    @notice The address registered as `name`; reverts for an unknown name.
    """
    addr: address = self._addresses[name]
    assert addr != empty(address), "registry: unknown name"
    return addr


@external
@view
def has(name: String[32]) -> bool:
    """
    @notice Whether `name` is registered.
    """
    return self._addresses[name] != empty(address)


@external
@view
def names() -> DynArray[String[32], MAX_NAMES]:
    """
    @notice Every registered name, in the order first set.
    """
    return self._names
