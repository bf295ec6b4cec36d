"""Control message operation codes (``erts/emulator/beam/dist.h``), first element of the tuple."""

from __future__ import annotations

LINK = 1
SEND = 2
EXIT = 3
UNLINK = 4
NODE_LINK = 5
REG_SEND = 6
GROUP_LEADER = 7
EXIT2 = 8
SEND_TT = 12
EXIT_TT = 13
REG_SEND_TT = 16
EXIT2_TT = 18
MONITOR_P = 19
DEMONITOR_P = 20
MONITOR_P_EXIT = 21
SEND_SENDER = 22
SEND_SENDER_TT = 23
PAYLOAD_EXIT = 24
PAYLOAD_EXIT_TT = 25
PAYLOAD_EXIT2 = 26
PAYLOAD_EXIT2_TT = 27
PAYLOAD_MONITOR_P_EXIT = 28
SPAWN_REQUEST = 29
SPAWN_REQUEST_TT = 30
SPAWN_REPLY = 31
SPAWN_REPLY_TT = 32
ALIAS_SEND = 33
ALIAS_SEND_TT = 34
UNLINK_ID = 35
UNLINK_ID_ACK = 36

#: ops whose message part is delivered to the pid in element 2 (index 2).
SENDS_TO_PID = frozenset({SEND, SEND_TT, SEND_SENDER, SEND_SENDER_TT})
#: exit signals carrying their reason in the control tuple (index 3) ...
EXITS_WITH_REASON = frozenset({EXIT, EXIT2})
#: ... and the EXIT_PAYLOAD forms, reason in the message part.
EXITS_WITH_PAYLOAD = frozenset({PAYLOAD_EXIT, PAYLOAD_EXIT_TT, PAYLOAD_EXIT2, PAYLOAD_EXIT2_TT})
