"""Atoms the library compares replies against, defined once.

``Atom`` is a ``str`` subclass, so these also work as value patterns in ``match``
statements. Match Erlang tuples with ``tuple((...))``: a bare ``(a, b)`` pattern also
matches a Python list, which is an Erlang list.
"""

from pyrlang_zarr.term.types import Atom

OK = Atom("ok")
ATOMIC = Atom("atomic")
ABORTED = Atom("aborted")
EXIT = Atom("EXIT")
DOWN = Atom("DOWN")
BADRPC = Atom("badrpc")
EMPTY = Atom("")  # the unused "cookie" slot of control messages
GEN_CALL = Atom("$gen_call")
CALL = Atom("call")
YES = Atom("yes")

# Mnesia's replies and events
NO_EXISTS = Atom("no_exists")
NO_MAJORITY = Atom("no_majority")
NODE_NOT_RUNNING = Atom("node_not_running")
CONFLICT = Atom("conflict")  # our own abort reason for a checked batch
MNESIA_SYSTEM_EVENT = Atom("mnesia_system_event")
INCONSISTENT_DATABASE = Atom("inconsistent_database")
