"""Staking roles: the names people type and the numbers the Staking contract stores."""

from __future__ import annotations

from enum import IntEnum

from covey.errors import ValidationError


class Role(IntEnum):
    """A role an account stakes for; the value is the contract's `uint8`."""

    TRAINER = 0
    VALIDATOR = 1
    HOST = 2
    PROVIDER = 3
    PARTICIPANT = 4

    @classmethod
    def parse(cls, text: str) -> Role:
        """A role from its name (case-insensitive), or a clear error listing the choices."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            choices = ", ".join(role.name.lower() for role in cls)
            raise ValidationError(f"unknown role {text!r}: choose one of {choices}") from None
