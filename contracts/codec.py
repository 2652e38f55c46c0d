"""Bytes <-> referral messages: the encoder and decoders, built once, and deterministic message ids.

Building a msgspec Encoder/Decoder compiles the type's validation plan, so each is made once
here and shared (STYLE.md habit 8).
"""

import uuid

import msgspec

from contracts.common import Message
from contracts.referrals import OutboundEvent, ReferralEvent

__all__ = [
    "MESSAGE_ID_NAMESPACE",
    "decode_inbound",
    "decode_outbound",
    "derive_message_id",
    "encode",
    "peek_referral_id",
]

#: Namespace of every derived message id. Never change it: a changed id would no longer be
#: recognised as a duplicate by JetStream within its window.
MESSAGE_ID_NAMESPACE = uuid.UUID("2a2c552b-faf4-43c9-9f2a-88172af73971")


class _ReferralIdOnly(msgspec.Struct):
    # Lenient on purpose: reads the id out of a message that failed full validation.
    referral_id: uuid.UUID | None = None


_encoder = msgspec.json.Encoder()
_inbound: msgspec.json.Decoder[ReferralEvent] = msgspec.json.Decoder(ReferralEvent)
_outbound: msgspec.json.Decoder[OutboundEvent] = msgspec.json.Decoder(OutboundEvent)
_referral_id_only = msgspec.json.Decoder(_ReferralIdOnly)


def encode(msg: Message) -> bytes:
    """The JSON bytes of ``msg``, with its ``type`` tag."""
    return _encoder.encode(msg)


def decode_inbound(data: bytes) -> ReferralEvent:
    """A message the router consumes; ``msgspec.DecodeError`` (or its subclass
    ``ValidationError``, naming the JSON path) when it is not valid JSON or not a valid message.
    """
    return _inbound.decode(data)


def decode_outbound(data: bytes) -> OutboundEvent:
    """A message the router publishes (for providers, OW systems and tests); errors as above."""
    return _outbound.decode(data)


def peek_referral_id(data: bytes) -> uuid.UUID | None:
    """The ``referral_id`` of a message that may be invalid otherwise, or None when unreadable.

    For the dead letter of a rejected request, so OW can still tell which referral it was.
    """
    try:
        return _referral_id_only.decode(data).referral_id
    except msgspec.DecodeError:
        return None


def derive_message_id(referral_id: uuid.UUID, *parts: str | int) -> uuid.UUID:
    """A message id that is the same every time the same outbound message is produced.

    Sent as ``Nats-Msg-Id``, so a re-publish after a crash is dropped by JetStream. ``parts``
    name the message within its referral, e.g. ``("offered", attempt)`` or
    ``("status", "declined", attempt)``; different parts give different ids.
    """
    # Parts are joined as a JSON array of strings, so ("a/b",) and ("a", "b") cannot collide,
    # while 2 and "2" name the same part whichever way a caller spells it.
    name = _encoder.encode([str(referral_id), *(str(part) for part in parts)])
    return uuid.uuid5(MESSAGE_ID_NAMESPACE, name.decode())
