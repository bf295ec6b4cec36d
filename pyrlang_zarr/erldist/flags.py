"""Distribution capability flags (``erts/emulator/beam/dist.h``) and the set we advertise."""

from __future__ import annotations

PUBLISHED = 0x1
ATOM_CACHE = 0x2
EXTENDED_REFERENCES = 0x4
DIST_MONITOR = 0x8
FUN_TAGS = 0x10
DIST_MONITOR_NAME = 0x20
HIDDEN_ATOM_CACHE = 0x40
NEW_FUN_TAGS = 0x80
EXTENDED_PIDS_PORTS = 0x100
EXPORT_PTR_TAG = 0x200
BIT_BINARIES = 0x400
NEW_FLOATS = 0x800
UNICODE_IO = 0x1000
DIST_HDR_ATOM_CACHE = 0x2000
SMALL_ATOM_TAGS = 0x4000
UTF8_ATOMS = 0x10000
MAP_TAG = 0x20000
BIG_CREATION = 0x40000
SEND_SENDER = 0x80000
BIG_SEQTRACE_LABELS = 0x100000
EXIT_PAYLOAD = 0x400000
FRAGMENTS = 0x800000
HANDSHAKE_23 = 0x1000000
UNLINK_ID = 0x2000000
SPAWN = 1 << 32
NAME_ME = 1 << 33
V4_NC = 1 << 34
ALIAS = 1 << 35

#: What OTP 25 refuses to connect without (``DFLAG_DIST_MANDATORY_25``).
MANDATORY_25 = (
    EXTENDED_REFERENCES
    | FUN_TAGS
    | NEW_FUN_TAGS
    | EXTENDED_PIDS_PORTS
    | EXPORT_PTR_TAG
    | BIT_BINARIES
    | NEW_FLOATS
    | UTF8_ATOMS
    | MAP_TAG
    | BIG_CREATION
    | HANDSHAKE_23
)

#: OTP 26 adds these to the mandatory set.
MANDATORY_26 = MANDATORY_25 | UNLINK_ID | V4_NC

#: What we advertise: a hidden node (no PUBLISHED), no atom cache, no fragments, so every
#: message after the handshake is a pass-through ``'p'`` packet of plain terms. OTP sends
#: monitor DOWN signals only to peers with both DIST_MONITOR flags (``erts_dsig_send_m_exit``).
OUR_FLAGS = (
    MANDATORY_26 | DIST_MONITOR | DIST_MONITOR_NAME | UNICODE_IO | SMALL_ATOM_TAGS | EXIT_PAYLOAD
)


def describe(flags: int) -> list[str]:
    """Names of the flags set in ``flags``, for error messages."""
    names = {v: k for k, v in globals().items() if k.isupper() and isinstance(v, int)}
    return [names.get(1 << i, hex(1 << i)) for i in range(64) if flags >> i & 1]
