"""The command batch: what one Raft log entry carries for the state machine.

The leader packs the commands of many clients into one batch, with its clock
reading `now`, and proposes it as the data of one log entry; every replica
decodes it in `KVStateMachine.apply`.

Batch format (version 1), little-endian:
    u8 format (1) | f64 now | u32 count | count times:
        i64 seq | i64 ack | u32 op_len | u16 client_id_len | client_id (utf-8) | op
where op is `kv.codec.encode(request.to_plain())`; op_len is the request size
that limits.max_request_bytes bounds. A command whose op does not decode is
answered with its CodecError/InvalidRequest; the others still apply.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

from kv.codec import decode, encode
from kv.errors import CodecError, InvalidRequest, RaftKVError
from kv.requests import Op, op_from_plain

__all__ = ["Command", "encode_batch", "decode_batch", "decode_slots", "BATCH_FORMAT_V1"]

BATCH_FORMAT_V1 = 1

_BATCH_HEAD = struct.Struct("<BdI")
_CMD_HEAD = struct.Struct("<qqIH")


@dataclass(frozen=True, slots=True)
class Command:
    """One client command in a log entry.

    Attributes:
        client_id: the client session; "" for a command that is not
            deduplicated (applied every time it is delivered).
        seq: the command's number within the session (>= 1; a retry reuses it).
        ack: the client has the results of every seq below ack.
        op: the request: Put, Range, DeleteRange, Txn or Compact.
    """

    client_id: str
    seq: int
    ack: int
    op: Op


def encode_batch(commands: list[Command], now: float) -> bytes:
    """Encode commands and the leader's clock reading into one log entry's data.

    Args:
        commands: the commands, in the order they are to be applied.
        now: the leader's clock in seconds (finite), used for session expiry.

    Returns:
        The entry data (see the module docstring for the format).

    Raises:
        InvalidRequest: a command's fields have the wrong type or range
            (CodecError if its op holds a value that cannot be encoded).
    """
    if isinstance(now, bool) or not isinstance(now, (int, float)) or not math.isfinite(now):
        raise InvalidRequest(f"now must be a finite number of seconds, got {now!r}")
    parts = [_BATCH_HEAD.pack(BATCH_FORMAT_V1, float(now), len(commands))]
    for cmd in commands:
        if type(cmd) is not Command:
            raise InvalidRequest(f"batch items must be Command, got {type(cmd).__name__}")
        if not isinstance(cmd.client_id, str):
            raise InvalidRequest(f"Command.client_id must be a str, got {type(cmd.client_id).__name__}")
        to_plain = getattr(cmd.op, "to_plain", None)
        if to_plain is None:
            raise InvalidRequest(f"Command.op must be a request, got {type(cmd.op).__name__}")
        op = encode(to_plain())
        cid = cmd.client_id.encode("utf-8")
        try:
            parts.append(_CMD_HEAD.pack(cmd.seq, cmd.ack, len(op), len(cid)))
        except struct.error:
            raise InvalidRequest(
                f"Command seq and ack must be 64-bit ints and client_id under 64 KiB, got "
                f"seq={cmd.seq!r} ack={cmd.ack!r}"
            ) from None
        parts.append(cid)
        parts.append(op)
    return b"".join(parts)


def decode_slots(data: bytes) -> tuple[float, list[tuple[str, int, int, Any, int]]]:
    """Split a batch into (client_id, seq, ack, op or error instance, op size).

    Raises:
        CodecError: the batch framing itself is broken.
    """
    try:
        fmt, now, count = _BATCH_HEAD.unpack_from(data, 0)
    except struct.error:
        raise CodecError(f"truncated command batch ({len(data)} bytes)") from None
    if fmt != BATCH_FORMAT_V1:
        raise CodecError(
            f"unknown command batch format {fmt} (this replica reads {BATCH_FORMAT_V1}); upgrade the replica"
        )
    pos = _BATCH_HEAD.size
    n = len(data)
    slots = []
    head_size = _CMD_HEAD.size
    unpack_head = _CMD_HEAD.unpack_from
    for _ in range(count):
        if pos + head_size > n:
            raise CodecError("truncated command batch")
        seq, ack, op_len, cid_len = unpack_head(data, pos)
        pos += head_size
        end = pos + cid_len + op_len
        if end > n:
            raise CodecError("truncated command batch")
        try:
            client_id = data[pos : pos + cid_len].decode("utf-8")
        except UnicodeDecodeError:
            raise CodecError("command batch holds a client id that is not utf-8") from None
        try:
            op: Any = op_from_plain(decode(data[pos + cid_len : end]))
        except InvalidRequest as exc:
            op = exc
        except (TypeError, ValueError, IndexError, RecursionError) as exc:
            # never let a malformed entry escape apply(): it would stop every replica at it
            op = InvalidRequest(f"malformed request: {type(exc).__name__}: {exc}")
        slots.append((client_id, seq, ack, op, op_len))
        pos = end
    if pos != n:
        raise CodecError(f"{n - pos} trailing bytes after the command batch")
    return now, slots


def decode_batch(data: bytes) -> tuple[float, list[Command]]:
    """Decode an `encode_batch` result.

    Returns:
        (now, commands).

    Raises:
        CodecError: the data is not a well-formed batch.
        InvalidRequest: a command's op is not a well-formed request.
    """
    now, slots = decode_slots(bytes(data))
    commands = []
    for client_id, seq, ack, op, _ in slots:
        if isinstance(op, RaftKVError):
            raise op
        commands.append(Command(client_id, seq, ack, op))
    return now, commands
