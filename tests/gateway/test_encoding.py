"""Our x402 messages and headers are byte-compatible with the reference SDK's, in both directions."""

from __future__ import annotations

import base64
import json

import pytest
from x402.http.utils import (
    decode_payment_required_header,
    decode_payment_response_header,
    decode_payment_signature_header,
    encode_payment_signature_header,
)
from x402.schemas import PaymentPayload as SdkPaymentPayload
from x402.schemas import PaymentRequired as SdkPaymentRequired
from x402.schemas import PaymentRequirements as SdkPaymentRequirements

from covey.gateway.x402.encoding import decode_payment_payload, encode_header
from covey.gateway.x402.errors import MalformedPaymentError
from covey.gateway.x402.types import PaymentPayload, PaymentRequired, PaymentRequirements, ResourceInfo, SettleResponse

REQUIREMENTS = PaymentRequirements(
    scheme="exact",
    network="eip155:31337",
    amount="10000",
    asset="0x5FbDB2315678afecb367f032d93F642f64180aa3",
    pay_to="0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
    max_timeout_seconds=600,
    extra={"name": "Covey USD", "version": "2"},
)
AUTHORIZATION = {
    "from": "0x857b06519E91e3A54538791bDbb0E22373e36b66",
    "to": REQUIREMENTS.pay_to,
    "value": "10000",
    "validAfter": "1740672089",
    "validBefore": "1740672154",
    "nonce": "0x" + "f3" * 32,
}


def test_wire_names_are_the_specs_camel_case() -> None:
    wire = PaymentRequired(resource=ResourceInfo(url="http://x/paid"), accepts=[REQUIREMENTS]).to_wire()

    assert set(wire) == {"x402Version", "resource", "accepts"}
    assert set(wire["accepts"][0]) == {"scheme", "network", "amount", "asset", "payTo", "maxTimeoutSeconds", "extra"}


def test_the_sdk_reads_our_headers() -> None:
    required = PaymentRequired(
        error="payment required", resource=ResourceInfo(url="http://x/paid"), accepts=[REQUIREMENTS]
    )
    receipt = SettleResponse(success=True, transaction="0x" + "ab" * 32, network="eip155:31337", payer="0x1")

    sdk_required = decode_payment_required_header(encode_header(required))
    sdk_receipt = decode_payment_response_header(encode_header(receipt))

    assert isinstance(sdk_required, SdkPaymentRequired) and sdk_required.resource is not None
    assert sdk_required.accepts[0].model_dump(by_alias=True) == REQUIREMENTS.to_wire()
    assert sdk_required.error == "payment required" and sdk_required.resource.url == "http://x/paid"
    assert sdk_receipt.success and sdk_receipt.transaction == receipt.transaction


def test_we_read_the_sdks_payment_header_and_it_reads_ours() -> None:
    sdk_payload = SdkPaymentPayload(
        x402_version=2,
        accepted=SdkPaymentRequirements.model_validate(REQUIREMENTS.to_wire()),
        payload={"signature": "0x" + "11" * 65, "authorization": AUTHORIZATION},
    )

    ours = decode_payment_payload(encode_payment_signature_header(sdk_payload))
    back = decode_payment_signature_header(encode_header(ours))

    assert ours.accepted == REQUIREMENTS and ours.payload["authorization"] == AUTHORIZATION
    assert back.model_dump(by_alias=True, exclude_none=True) == sdk_payload.model_dump(by_alias=True, exclude_none=True)


@pytest.mark.parametrize(
    "header",
    [
        "%%%",
        base64.b64encode(b"[1, 2]").decode(),
        base64.b64encode(json.dumps({"x402Version": 2}).encode()).decode(),
        "A" * 20_000,
    ],
)
def test_undecodable_headers_are_malformed(header: str) -> None:
    with pytest.raises(MalformedPaymentError):
        decode_payment_payload(header)


def test_a_payload_round_trips() -> None:
    payload = PaymentPayload(x402_version=2, accepted=REQUIREMENTS, payload={"authorization": AUTHORIZATION})

    assert decode_payment_payload(encode_header(payload)) == payload
