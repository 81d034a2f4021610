# pragma version ~=0.4.3
"""
@title Covey x402 payment batcher
@custom:contract-name PaymentBatcher
@license Apache-2.0
@notice Settles many x402 `exact` payments (EIP-3009 authorisations) in one
        transaction, so the gateway pays the 21,000 gas transaction base and
        the cold token access once per batch instead of once per payment.
        Functions:
        - `settle`: call `transferWithAuthorization` on `token` for every
          payment; a payment that fails is skipped and logged, never reverting
          the batch, so one bad authorisation cannot block the others.
        The batcher holds no funds and needs no permissions: each transfer is
        bound by its payer's signature to its payee and amount, and anyone may
        submit an EIP-3009 authorisation.
"""


# ------------------------------------------------------------------ types


# @dev One signed EIP-3009 TransferWithAuthorization, as the payer signed it.
struct Payment:
    payer: address
    payee: address
    amount: uint256
    validAfter: uint256
    validBefore: uint256
    nonce: bytes32
    v: uint8
    r: bytes32
    s: bytes32


# @dev The most payments one `settle` call takes; about 50k gas each keeps 256 under common block limits.
MAX_PAYMENTS: constant(uint256) = 256


# ------------------------------------------------------------------ events


# @dev A payment in a batch was executed: `amount` moved from `payer` to `payee`.
event PaymentSettled:
    token: indexed(address)
    payer: indexed(address)
    nonce: indexed(bytes32)
    payee: address
    amount: uint256


# @dev A payment in a batch failed (used nonce, expired, bad signature, no funds) and was skipped.
event PaymentSkipped:
    token: indexed(address)
    payer: indexed(address)
    nonce: indexed(bytes32)


# @dev One `settle` call finished: how many payments it executed and skipped.
event BatchSettled:
    token: indexed(address)
    settled: uint256
    skipped: uint256


# ------------------------------------------------------------------ core


@external
def settle(token: address, payments: DynArray[Payment, MAX_PAYMENTS]) -> uint256:
    """
    @notice Execute every payment's `transferWithAuthorization` on `token`,
            skipping (and logging) the ones that revert.
    @param token The EIP-3009 token all payments in this batch are in.
    @param payments The signed authorisations.
    @return The number of payments executed.
    """
    # A call to an address without code "succeeds" silently: refuse it, or every payment would look settled.
    assert token.is_contract, "batcher: token has no code"
    settled: uint256 = 0
    for payment: Payment in payments:
        ok: bool = raw_call(
            token,
            abi_encode(
                payment.payer,
                payment.payee,
                payment.amount,
                payment.validAfter,
                payment.validBefore,
                payment.nonce,
                payment.v,
                payment.r,
                payment.s,
                method_id=method_id(
                    "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)"
                ),
            ),
            revert_on_failure=False,
        )
        if ok:
            settled += 1
            log PaymentSettled(
                token=token, payer=payment.payer, nonce=payment.nonce, payee=payment.payee, amount=payment.amount
            )
        else:
            log PaymentSkipped(token=token, payer=payment.payer, nonce=payment.nonce)
    log BatchSettled(token=token, settled=settled, skipped=len(payments) - settled)
    return settled
