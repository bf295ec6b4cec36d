"""Erlang logic sent as data: expressions parsed here, then run by ``erl_eval`` on the peer.

Some operations must decide on the server (insert if absent, compare and set, force the log
to disc after a commit). Nothing is installed on the cluster: each call sends the syntax tree
of an expression with the variable bindings to ``erl_eval:expr/5``, which returns only the
value (the bindings, chunk bytes included, are not shipped back).

The trees are built **here**, by a small parser for the part of Erlang these expressions use,
into exactly what ``erl_scan:string/1`` and ``erl_parse:parse_exprs/1`` return (the tests
compare the two on a real node). They are never asked of a peer: a tree from one node, cached
and then evaluated on another, would let a rogue node choose the code that a healthy node
runs for us. Anything outside that part of Erlang is refused with ``ValueError``.
"""

from __future__ import annotations

import builtins
import re
from typing import Any

from pyrlang_zarr.erldist import Node
from pyrlang_zarr.term import Atom

_NONE = Atom("none")
_VALUE = Atom("value")

# -- scanning ---------------------------------------------------------------------------------

_RESERVED = frozenset(
    "after and andalso band begin bnot bor bsl bsr bxor case catch cond div end fun if let "
    "not of or orelse receive rem try when xor".split()
)
_PUNCTUATION = sorted(
    "=:= =/= ... == /= =< >= -> <- || ++ -- :: << >> <= => := ( ) { } [ ] , ; : | = + - * / "
    "< > ! # .".split(),
    key=len,
    reverse=True,
)
_TOKEN = re.compile(
    r"(?P<space>[ \t\r\n]+)|(?P<comment>%[^\n]*)"
    r"|(?P<dot>\.(?=[ \t\r\n%]|\Z))"
    r"|(?P<atom>[a-z][A-Za-z0-9_@]*)|(?P<var>[A-Z_][A-Za-z0-9_@]*)"
    r"|(?P<integer>[0-9]+(?![0-9A-Za-z_#]|\.[0-9]))"
    r'|"(?P<string>[ -!#-\[\]-~\n]*)"'
    r"|(?P<punct>" + "|".join(map(re.escape, _PUNCTUATION)) + ")"
)

# (kind, value, line): kind is "atom", "var", "integer", "string" (ASCII, no escapes), "dot",
# "eof", or the reserved word or punctuation itself.
_Token = tuple[str, Any, int]


def _scan(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    line = 1
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ValueError(f"unsupported Erlang syntax at line {line}: {text[pos : pos + 20]!r}")
        kind = m.lastgroup
        value = m.group()
        if kind == "string":
            value = m.group("string")
        if kind == "atom" and value in _RESERVED:
            kind = value
        elif kind == "punct":
            kind = value
        if kind not in ("space", "comment"):
            assert kind is not None
            token: Any = value
            if kind == "integer":
                token = int(value)
            elif kind == "string":  # a list of character codes, as Erlang has it
                token = list(value.encode())
            tokens.append((kind, token, line))
        line += value.count("\n")
        pos = m.end()
    tokens.append(("eof", None, line))
    return tokens


# -- parsing ----------------------------------------------------------------------------------

_COMP_OPS = frozenset(["==", "/=", "=<", "<", ">=", ">", "=:=", "=/="])
_LIST_OPS = frozenset(["++", "--"])
_ADD_OPS = frozenset(["+", "-"])
_MULT_OPS = frozenset(["*", "/"])


_BOOLS = {"true": True, "false": False}


def _a(name: str) -> Atom:
    return Atom(name)


def _first_anno(node: tuple[Any, ...]) -> int:
    """The line of an expression's first token (``erl_parse``'s ``first_anno``)."""
    kind = node[0]
    if kind == "remote":
        return _first_anno(node[2])
    if kind == "call" or kind == "match":
        return _first_anno(node[2])
    if kind == "op" and len(node) == 5:
        return _first_anno(node[3])
    return int(node[1])


class _Parser:
    """Recursive descent over the grammar of ``erl_parse.yrl``, for the supported subset."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> str:
        return self.tokens[self.i][0]

    def take(self, kind: str | None = None) -> _Token:
        token = self.tokens[self.i]
        if kind is not None and token[0] != kind:
            raise self.error(f"expected {kind!r}")
        self.i += 1
        return token

    def error(self, what: str) -> ValueError:
        kind, value, line = self.tokens[self.i]
        return ValueError(
            f"unsupported Erlang syntax at line {line}: {what}, found {value or kind!r}"
        )

    def exprs(self) -> list[Any]:
        out = [self.expr()]
        while self.peek() == ",":
            self.take()
            out.append(self.expr())
        return out

    def expr(self) -> Any:  # expr_100: Pattern = Expr, Pid ! Message (right-associative)
        left = self.expr_150()
        if self.peek() == "=":
            self.take()
            return (_a("match"), _first_anno(left), left, self.expr())
        if self.peek() == "!":
            line = self.take()[2]
            return (_a("op"), line, _a("!"), left, self.expr())
        return left

    def expr_150(self) -> Any:  # orelse, right-associative
        left = self.expr_160()
        if self.peek() == "orelse":
            op, _, line = self.take()
            return (_a("op"), line, _a(op), left, self.expr_150())
        return left

    def expr_160(self) -> Any:  # andalso, right-associative
        left = self.expr_200()
        if self.peek() == "andalso":
            op, _, line = self.take()
            return (_a("op"), line, _a(op), left, self.expr_160())
        return left

    def expr_200(self) -> Any:  # comparisons, not associative
        left = self.expr_300()
        if self.peek() in _COMP_OPS:
            op, _, line = self.take()
            return (_a("op"), line, _a(op), left, self.expr_300())
        return left

    def expr_300(self) -> Any:  # ++ and --, right-associative
        left = self.expr_400()
        if self.peek() in _LIST_OPS:
            op, _, line = self.take()
            return (_a("op"), line, _a(op), left, self.expr_300())
        return left

    def expr_400(self) -> Any:
        left = self.expr_500()
        while self.peek() in _ADD_OPS:
            op, _, line = self.take()
            left = (_a("op"), line, _a(op), left, self.expr_500())
        return left

    def expr_500(self) -> Any:
        left = self.expr_700()
        while self.peek() in _MULT_OPS:
            op, _, line = self.take()
            left = (_a("op"), line, _a(op), left, self.expr_700())
        return left

    def expr_700(self) -> Any:  # a call, or a remote name, or a primary
        head = self.expr_max()
        if self.peek() == ":":
            line = self.take()[2]
            head = (_a("remote"), line, head, self.expr_max())
        if self.peek() == "(":
            self.take()
            args = [] if self.peek() == ")" else self.exprs()
            self.take(")")
            return (_a("call"), _first_anno(head), head, args)
        return head

    def expr_max(self) -> Any:
        kind, value, line = self.tokens[self.i]
        if kind in ("var", "atom", "integer", "string"):
            self.take()
            if kind == "atom":  # true and false as the decoder gives them: bools
                value = _BOOLS.get(value, Atom(value))
            elif kind == "var":
                value = Atom(value)
            return (_a(kind), line, value)
        if kind == "(":
            self.take()
            inner = self.expr()
            self.take(")")
            return inner
        if kind == "{":
            self.take()
            elements = [] if self.peek() == "}" else self.exprs()
            self.take("}")
            return (_a("tuple"), line, elements)
        if kind == "[":
            return self.list()
        if kind == "<<":
            self.take()
            segments = []
            if self.peek() != ">>":
                segments.append(self.bin_element())
                while self.peek() == ",":
                    self.take()
                    segments.append(self.bin_element())
            self.take(">>")
            return (_a("bin"), line, segments)
        if kind == "begin":
            self.take()
            body = self.exprs()
            self.take("end")
            return (_a("block"), line, body)
        if kind == "case":
            self.take()
            subject = self.expr()
            self.take("of")
            clauses = [self.case_clause()]
            while self.peek() == ";":
                self.take()
                clauses.append(self.case_clause())
            self.take("end")
            return (_a("case"), line, subject, clauses)
        if kind == "receive":
            return self.receive()
        if kind == "fun":
            self.take()
            if self.peek() == "var":  # fun Name(...) -> ... end, a fun that calls itself
                return self.named_fun(line)
            if self.peek() == "atom":  # fun M:F/A, an external fun
                module = self.expr_max()
                self.take(":")
                function = self.expr_max()
                self.take("/")
                _, count, count_line = self.take("integer")
                if module[0] != "atom" or function[0] != "atom":
                    raise ValueError(f"fun at line {line}: only fun Module:Function/Arity")
                arity_form = (_a("integer"), count_line, count)
                return (_a("fun"), line, (_a("function"), module, function, arity_form))
            clauses = [self.fun_clause()]
            while self.peek() == ";":
                self.take()
                clauses.append(self.fun_clause())
            self.take("end")
            arity = len(clauses[0][2])
            if any(len(c[2]) != arity for c in clauses):
                raise ValueError(f"fun at line {line}: clauses of different arities")
            return (_a("fun"), line, (_a("clauses"), clauses))
        raise self.error("expected an expression")

    def receive(self) -> Any:
        """``receive Clauses [after T -> Body] end`` (the ``after`` part alone too)."""
        line = self.take("receive")[2]
        clauses = []
        if self.peek() != "after":
            clauses.append(self.case_clause())
            while self.peek() == ";":
                self.take()
                clauses.append(self.case_clause())
        if self.peek() == "after":
            self.take()
            timeout = self.expr()
            self.take("->")
            body = self.exprs()
            self.take("end")
            return (_a("receive"), line, clauses, timeout, body)
        self.take("end")
        if not clauses:
            raise self.error("a receive needs clauses or an after part")
        return (_a("receive"), line, clauses)

    def named_fun(self, line: int) -> Any:
        """``fun Name(Args) -> ...; Name(Args) -> ... end``: Name is bound in the body."""
        clauses = []
        name = None
        while True:
            _, var, var_line = self.take("var")
            if name is not None and var != name:
                raise ValueError(f"fun at line {line}: clauses of different names")
            name = var
            self.take("(")
            patterns = [] if self.peek() == ")" else self.exprs()
            self.take(")")
            guard = self.guard()
            self.take("->")
            clauses.append((_a("clause"), var_line, patterns, guard, self.exprs()))
            if self.peek() != ";":
                break
            self.take()
        self.take("end")
        if any(len(c[2]) != len(clauses[0][2]) for c in clauses):
            raise ValueError(f"fun at line {line}: clauses of different arities")
        return (_a("named_fun"), line, Atom(name), clauses)

    def list(self) -> Any:
        line = self.take("[")[2]
        if self.peek() == "]":
            self.take()
            return (_a("nil"), line)
        first = self.expr()
        if self.peek() == "||":
            self.take()
            qualifiers = [self.qualifier()]
            while self.peek() == ",":
                self.take()
                qualifiers.append(self.qualifier())
            self.take("]")
            return (_a("lc"), line, first, qualifiers)
        return (_a("cons"), line, first, self.tail())

    def bin_element(self) -> Any:  # whole values only: no sizes, no types
        value = self.expr_max()
        if self.peek() in (":", "/"):
            raise self.error("binary segments with a size or type are not supported")
        return (_a("bin_element"), value[1], value, _a("default"), _a("default"))

    def tail(self) -> Any:
        kind, _, line = self.take()
        if kind == "]":
            return (_a("nil"), line)
        if kind == "|":
            rest = self.expr()
            self.take("]")
            return rest
        if kind == ",":
            element = self.expr()
            return (_a("cons"), element[1], element, self.tail())
        self.i -= 1
        raise self.error("expected ',', '|' or ']'")

    def qualifier(self) -> Any:
        left = self.expr()
        if self.peek() == "<-":
            line = self.take()[2]
            return (_a("generate"), line, left, self.expr())
        return left

    def guard(self) -> builtins.list[builtins.list[Any]]:
        """``when G1; G2 ->``: guard sequences of comma-separated tests (or none)."""
        if self.peek() != "when":
            return []
        self.take()
        guards = [self.exprs()]
        while self.peek() == ";":
            self.take()
            guards.append(self.exprs())
        return guards

    def case_clause(self) -> Any:
        pattern = self.expr()
        guard = self.guard()
        self.take("->")
        return (_a("clause"), pattern[1], [pattern], guard, self.exprs())

    def fun_clause(self) -> Any:
        line = self.take("(")[2]
        patterns = [] if self.peek() == ")" else self.exprs()
        self.take(")")
        guard = self.guard()
        self.take("->")
        return (_a("clause"), line, patterns, guard, self.exprs())


def parse_exprs(text: str) -> list[Any]:
    """The syntax trees of the expressions in ``text`` (ended by a dot), exactly as
    ``erl_parse:parse_exprs(element(2, erl_scan:string(Text)))`` gives them on a node."""
    parser = _Parser(_scan(text))
    exprs = parser.exprs()
    parser.take("dot")
    if parser.peek() != "eof":
        raise parser.error("expected the end after the dot")
    return exprs


def parse(text: str) -> Any:
    """The syntax tree of the one expression in ``text``: see :func:`parse_exprs`."""
    exprs = parse_exprs(text)
    if len(exprs) != 1:
        raise ValueError(f"expected one expression, got {len(exprs)}")
    return exprs[0]


# Built once per text: they are constants of this library.
_TREES: dict[str, Any] = {}


def tree(text: str) -> Any:
    """:func:`parse`, cached."""
    found = _TREES.get(text)
    if found is None:
        found = _TREES[text] = parse(text)
    return found


class Expressions:
    """Erlang expressions evaluated on peers, from trees built here."""

    def __init__(self, node: Node) -> None:
        self._node = node

    async def eval(
        self, peer: str, text: str, bindings: dict[str, Any], *, timeout: float | None
    ) -> Any:
        """The value of ``text`` on ``peer`` with Erlang variables bound from ``bindings``."""
        binds = sorted((Atom(k), v) for k, v in bindings.items())
        return await self._node.rpc(
            peer, "erl_eval", "expr", [tree(text), binds, _NONE, _NONE, _VALUE], timeout=timeout
        )
