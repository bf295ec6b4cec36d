"""TLS distribution (OTP's ``inet_tls_dist``) from the client side: settings, and the errors.

A node started with ``-proto_dist inet_tls -ssl_dist_optfile FILE`` registers in EPMD as any
node does (EPMD stays plain), and its distribution port speaks TLS: the client connects TCP,
runs a TLS handshake (with a client certificate when the node demands one, as
``fail_if_no_peer_cert`` does), then the normal distribution handshake inside TLS, where the
cookie is checked as ever.

What is verified, the way ``inet_tls_dist`` sets up its own client side: the node's
certificate must chain to the given CA (``verify_peer``), and must name the host part of
the node name (OTP sets ``server_name_indication`` to that host, and OTP's ``ssl`` then
checks the certificate's names against it; seen on OTP 25, a node whose certificate lacks
that name is refused by other OTP nodes with ``{bad_cert, hostname_check_failed}``).
``server_name`` checks another name instead; ``check_hostname=False`` (an optfile's
``{server_name_indication, disable}``) checks the chain only.

:class:`TlsConfig` is that configuration as file paths, so it pickles (dask workers and
other processes rebuild the ``ssl.SSLContext`` from the same files); :meth:`TlsConfig.
from_optfile` reads a cluster's own ``ssl_dist_optfile``. Nothing here imports ``ssl`` at
module level: the sans-IO session reports a TLS-speaking peer with :class:`TlsError` and
stays free of sockets.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from pyrlang_zarr.errors import AuthenticationError

if TYPE_CHECKING:
    import ssl

__all__ = [
    "OPTFILE_ENV",
    "TlsConfig",
    "TlsError",
    "TlsOption",
    "read_optfile",
    "resolve_tls",
]

#: Environment variable naming an ``ssl_dist_optfile``: ``Node(tls=None)`` (the default)
#: then speaks TLS distribution with it, as every ``erl`` of a cluster started with
#: ``ERL_FLAGS="-proto_dist inet_tls -ssl_dist_optfile FILE"`` does. ``tls=False`` ignores it.
OPTFILE_ENV = "PYRLANG_ZARR_SSL_DIST_OPTFILE"

#: The first bytes of a TLS record a TLS node sends to a client that spoke plain TCP to it:
#: an alert (21) or a handshake (22), record version 3.x. No plain distribution handshake
#: packet starts so (it would announce a status of over 5 kB).
TLS_RECORD_STARTS = (b"\x15\x03", b"\x16\x03")


class TlsError(AuthenticationError):
    """TLS distribution refused the connection: a certificate was refused (ours by the
    node, or the node's by us), or one side wants TLS and the other does not."""


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Client settings for TLS distribution, as paths (so it pickles).

    ``certfile`` is our certificate (PEM; ``None``: none is sent, for nodes that do not
    demand one), ``keyfile`` its private key (``None``: in ``certfile``), ``cafile`` the CA
    certificates the node's certificate must chain to (``None``: the system's). The node's
    certificate must also name ``server_name``, by default the host part of the node name
    (as OTP's own client checks); ``check_hostname=False`` checks the chain only.
    ``verify=False`` (an optfile's ``{verify, verify_none}``) checks nothing about the node:
    the traffic is encrypted, the node unauthenticated. Relative paths are made absolute.
    """

    certfile: str | None
    keyfile: str | None = None
    cafile: str | None = None
    server_name: str | None = None
    check_hostname: bool = True
    verify: bool = True
    source: str | None = field(default=None, compare=False)  # the optfile it was read from

    def __post_init__(self) -> None:
        for name in ("certfile", "keyfile", "cafile"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, str | os.PathLike):
                raise TypeError(f"{name} must be a path, not {type(value).__name__}")
            object.__setattr__(self, name, os.path.abspath(os.fspath(value)))
        if self.keyfile is not None and self.certfile is None:
            raise ValueError("a keyfile needs its certfile")
        if self.server_name is not None and not isinstance(self.server_name, str):
            raise TypeError("server_name must be a str")
        if not self.verify and self.check_hostname:
            object.__setattr__(self, "check_hostname", False)

    @classmethod
    def from_optfile(cls, path: str | os.PathLike[str]) -> TlsConfig:
        """The client side of a cluster's ``ssl_dist_optfile`` (see :func:`read_optfile`)."""
        return read_optfile(path)

    def context(self) -> ssl.SSLContext:
        """A client ``SSLContext`` for these settings: TLS 1.2 or later, our certificate
        loaded, the node's verified against ``cafile`` (``check_hostname`` as set; the name
        checked is passed per connection)."""
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            if self.verify:
                if self.cafile is not None:
                    ctx.load_verify_locations(cafile=self.cafile)
                else:
                    ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
                ctx.check_hostname = self.check_hostname
            else:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if self.certfile is not None:
                ctx.load_cert_chain(self.certfile, self.keyfile)
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                f"TLS distribution: {exc.filename} does not exist{self._from()}"
            ) from None
        except ssl.SSLError as exc:
            raise ValueError(
                f"TLS distribution: cannot load the certificates{self._from()} "
                f"(certfile {self.certfile}, keyfile {self.keyfile}, cafile {self.cafile}): "
                f"{exc.reason or exc}"
            ) from None
        return ctx

    def _from(self) -> str:
        return f" (read from {self.source})" if self.source else ""


#: What ``tls=`` takes: a :class:`TlsConfig`, an ``ssl.SSLContext``, a path to an
#: ``ssl_dist_optfile``, ``None`` (``$PYRLANG_ZARR_SSL_DIST_OPTFILE`` if set, else plain
#: TCP) or ``False`` (plain TCP).
TlsOption: TypeAlias = "TlsConfig | ssl.SSLContext | str | os.PathLike[str] | bool | None"


def normalize(tls: Any) -> TlsConfig | ssl.SSLContext | bool | None:
    """``tls`` as a store keeps it: an optfile path read into a :class:`TlsConfig` (so a
    bad file fails now, and what pickles are the certificate paths); ``None``, ``False``,
    a ``TlsConfig`` or an ``SSLContext`` as they are. ``True`` is refused (say which)."""
    import ssl

    if tls is None or tls is False or isinstance(tls, TlsConfig | ssl.SSLContext):
        return tls
    if tls is True:
        raise ValueError(
            "tls=True does not say which certificates: pass TlsConfig(certfile, keyfile, "
            "cafile), the cluster's ssl_dist_optfile path, or an ssl.SSLContext"
        )
    if isinstance(tls, str | os.PathLike):
        return read_optfile(tls)
    raise TypeError(
        "tls must be a TlsConfig, an ssl.SSLContext, the path of an ssl_dist_optfile, None "
        f"or False, not {type(tls).__name__}"
    )


def resolve_tls(
    tls: Any, environ: Mapping[str, str] | None = None
) -> TlsConfig | ssl.SSLContext | None:
    """What a node connects with: ``tls`` normalized; ``None`` means
    ``$PYRLANG_ZARR_SSL_DIST_OPTFILE`` if it is set, else plain TCP; ``False`` plain TCP."""
    value = normalize(tls)
    if value is False:
        return None
    if value is None:
        path = (os.environ if environ is None else environ).get(OPTFILE_ENV, "").strip()
        return read_optfile(path) if path else None
    assert value is not True
    return value


def context_of(tls: TlsConfig | ssl.SSLContext) -> ssl.SSLContext:
    return tls.context() if isinstance(tls, TlsConfig) else tls


def server_name(tls: TlsConfig | ssl.SSLContext, host: str) -> str:
    """The name the node's certificate is checked against (and sent as SNI)."""
    if isinstance(tls, TlsConfig) and tls.server_name is not None:
        return tls.server_name
    return host


# -- what an SSL failure means ---------------------------------------------------------------

_REFUSED_OURS = {
    "HANDSHAKE_FAILURE": "it wants a client certificate and we sent none, or none it accepts",
    "CERTIFICATE_REQUIRED": "it wants a client certificate and we sent none",
    "UNKNOWN_CA": "our certificate is not signed by a CA it trusts",
    "CERTIFICATE_EXPIRED": "our certificate has expired (or is not valid yet)",
    "BAD_CERTIFICATE": "it does not accept our certificate",
    "UNSUPPORTED_CERTIFICATE": "it does not accept our certificate's kind",
    "CERTIFICATE_REVOKED": "our certificate is revoked",
    "CERTIFICATE_UNKNOWN": "it does not accept our certificate",
    "ACCESS_DENIED": "it denies us access",
    "PROTOCOL_VERSION": "it speaks no TLS version we speak",
    "INSUFFICIENT_SECURITY": "it wants stronger ciphers",
}


def describe_ssl_error(peer: str, exc: BaseException, *, stage: str) -> TlsError:
    """The :class:`TlsError` an ``ssl`` failure with ``peer`` means, saying which side
    refused what and how to fix it."""
    import ssl

    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or exc.reason or str(exc)
        hint = ""
        if "hostname" in why.lower() or "IP address mismatch" in why:
            hint = (
                "; its certificate must name the node's host (as OTP's own client checks), "
                "or pass TlsConfig(..., server_name=NAME) or check_hostname=False"
            )
        elif "unable to get local issuer" in why or "self-signed" in why or "self signed" in why:
            hint = "; give the CA that signed the node certificates (cafile / cacertfile)"
        return TlsError(f"we refused {peer}'s TLS certificate: {why}{hint}")
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").upper()
        for key, meaning in _REFUSED_OURS.items():
            if key in reason:
                return TlsError(f"{peer} refused our TLS connection {stage}: {meaning} ({reason})")
        if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER" in reason:
            return TlsError(
                f"{peer} does not speak TLS on its distribution port ({reason}): it runs plain "
                "distribution; connect without tls"
            )
        return TlsError(f"TLS with {peer} failed {stage}: {exc.reason or exc}")
    why = str(exc) or type(exc).__name__
    return TlsError(
        f"{peer} closed the connection {stage} ({why}): it refused our TLS connection, or "
        "does not run TLS distribution"
    )


def plain_refused(peer: str) -> TlsError:
    """A TLS node answered our plain distribution handshake with a TLS record."""
    return TlsError(
        f"{peer} wants TLS distribution (it answered our plain handshake with a TLS record: "
        "the cluster runs -proto_dist inet_tls): give tls=TlsConfig(certfile, keyfile, "
        "cafile) or the cluster's ssl_dist_optfile (command line: --tls-optfile FILE; or set "
        f"${OPTFILE_ENV})"
    )


# -- the ssl_dist_optfile ----------------------------------------------------------------------


class Atom(str):
    """An atom read from an optfile."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Call:
    """A remote call in an optfile (``public_key:pkix_verify_hostname_match_fun(https)``),
    read but never evaluated."""

    module: str
    function: str
    args: tuple[Any, ...]


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|%[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<qatom>'(?:[^'\\]|\\.)*')
  | (?P<float>[-+]?\d+\.\d+(?:[eE][-+]?\d+)?)
  | (?P<int>[-+]?\d+(?:\#[0-9A-Za-z]+)?)
  | (?P<char>\$(?:\\.|.))
  | (?P<atom>[a-z][A-Za-z0-9_@]*)
  | (?P<var>[A-Z_][A-Za-z0-9_@]*)
  | (?P<punct><<|>>|[\[\]{},.:()|])
    """,
    re.VERBOSE | re.DOTALL,
)

_ESCAPES = {
    "b": "\b",
    "d": "\x7f",
    "e": "\x1b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "s": " ",
    "t": "\t",
    "v": "\v",
}


def _unescape(body: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt in "01234567":
            digits = re.match(r"[0-7]{1,3}", body[i + 1 :])
            assert digits is not None
            out.append(chr(int(digits.group(), 8)))
            i += 1 + len(digits.group())
        elif nxt == "x":
            braced = re.match(r"x\{([0-9A-Fa-f]+)\}", body[i + 1 :])
            hexed = braced or re.match(r"x([0-9A-Fa-f]{2})", body[i + 1 :])
            if hexed is None:
                raise ValueError(f"bad \\x escape in {body!r}")
            out.append(chr(int(hexed.group(1), 16)))
            i += 1 + len(hexed.group())
        elif nxt == "^":
            out.append(chr(ord(body[i + 2]) & 31))
            i += 3
        else:
            out.append(nxt)
            i += 2
    return "".join(out)


class _Reader:
    """A reader for the literal subset of Erlang an optfile holds: atoms, strings, numbers,
    tuples, lists, binaries of strings, and remote calls (kept as :class:`Call`)."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.tokens: list[tuple[str, str, int]] = []
        pos, line = 0, 1
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise ValueError(f"{source}:{line}: cannot read {text[pos : pos + 20]!r}")
            kind = m.lastgroup
            assert kind is not None
            if kind != "ws":
                self.tokens.append((kind, m.group(), line))
            line += m.group().count("\n")
            pos = m.end()
        self.i = 0

    def fail(self, what: str) -> ValueError:
        if self.i < len(self.tokens):
            _, text, line = self.tokens[self.i]
            return ValueError(f"{self.source}:{line}: {what}, found {text!r}")
        return ValueError(f"{self.source}: {what}, found the end of the file")

    def peek(self) -> tuple[str, str]:
        if self.i >= len(self.tokens):
            return ("eof", "")
        kind, text, _ = self.tokens[self.i]
        return kind, text

    def take(self, text: str) -> None:
        if self.peek()[1] != text:
            raise self.fail(f"expected {text!r}")
        self.i += 1

    def document(self) -> Any:
        value = self.term()
        self.take(".")
        if self.peek()[0] != "eof":
            raise self.fail("expected one term ending with '.'")
        return value

    def sequence(self, close: str) -> list[Any]:
        items: list[Any] = []
        if self.peek()[1] == close:
            self.i += 1
            return items
        while True:
            items.append(self.term())
            text = self.peek()[1]
            self.i += 1
            if text == close:
                return items
            if text != ",":
                self.i -= 1
                raise self.fail(f"expected ',' or {close!r}")

    def term(self) -> Any:
        kind, text = self.peek()
        self.i += 1
        if kind == "string":
            value: Any = _unescape(text[1:-1])
            while self.peek()[0] == "string":  # "a" "b" is "ab", as in Erlang
                value += _unescape(self.peek()[1][1:-1])
                self.i += 1
            return value
        if kind in ("atom", "qatom"):
            name = Atom(text if kind == "atom" else _unescape(text[1:-1]))
            if self.peek()[1] == ":":
                self.i += 1
                kind2, function = self.peek()
                if kind2 not in ("atom", "qatom"):
                    raise self.fail("expected a function name")
                self.i += 1
                self.take("(")
                args = tuple(self.sequence(")"))
                return Call(str(name), function.strip("'"), args)
            return name
        if kind == "int":
            if "#" in text:
                base, digits = text.split("#")
                return int(digits, int(base))
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "char":
            return ord(_unescape(text[1:]))
        if text == "{":
            return tuple(self.sequence("}"))
        if text == "[":
            return self.sequence("]")
        if text == "<<":
            parts = self.sequence(">>")
            out = b""
            for part in parts:
                if isinstance(part, str):
                    out += part.encode("utf-8")
                elif isinstance(part, int):
                    out += bytes([part & 0xFF])
                else:
                    raise ValueError(f"{self.source}: unsupported binary segment {part!r}")
            return out
        self.i -= 1
        if kind == "var":
            raise self.fail("variables are not allowed")
        raise self.fail("expected a term")


def _encoding(raw: bytes) -> str:
    """The file's encoding as ``epp`` reads it: a ``coding:`` comment in its first two
    lines, else latin-1."""
    head = b"\n".join(raw.split(b"\n", 2)[:2])
    found = re.search(rb"coding\s*[:=]\s*([-\w.]+)", head)
    if found and found.group(1).lower().replace(b"_", b"-") in (b"utf-8", b"utf8"):
        return "utf-8"
    return "latin-1"


def parse_optfile_text(text: str, source: str = "<optfile>") -> Any:
    """The term an ``ssl_dist_optfile`` holds (one term ending with ``.``)."""
    return _Reader(text, source).document()


def _options(value: Any, side: str, source: str) -> dict[str, Any]:
    if not isinstance(value, list):
        raise ValueError(f"{source}: the {side} options must be a list, got {value!r}")
    out: dict[str, Any] = {}
    for opt in value:
        if isinstance(opt, tuple) and len(opt) == 2 and isinstance(opt[0], Atom):
            out.setdefault(str(opt[0]), opt[1])  # the first occurrence wins (proplists)
        elif isinstance(opt, Atom):
            out.setdefault(str(opt), Atom("true"))
        else:
            raise ValueError(f"{source}: bad {side} option {opt!r}")
    return out


def _path(opts: dict[str, Any], key: str, base: Path, source: str) -> str | None:
    value = opts.get(key)
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if not isinstance(value, str) or isinstance(value, Atom):
        raise ValueError(f"{source}: {key} must be a string (a path), got {value!r}")
    return str(base / value)  # relative paths: to the optfile's directory


_READ = {
    "certfile",
    "keyfile",
    "cacertfile",
    "verify",
    "server_name_indication",
    "customize_hostname_check",
}
_IGNORED = {
    # how OTP itself uses the connection, or server-side only: nothing for a client to mirror
    "secure_renegotiate",
    "reuse_sessions",
    "fail_if_no_peer_cert",
    "dhfile",
    "hibernate_after",
    "versions",
    "ciphers",
    "depth",
    "log_level",
    "erl_dist",
    "ktls",
    "honor_cipher_order",
    "client_renegotiation",
}


def read_optfile(path: str | os.PathLike[str]) -> TlsConfig:
    """The client settings of a cluster's ``ssl_dist_optfile``
    (``[{server, Opts}, {client, Opts}].``), read locally, never evaluated.

    The ``client`` options are used (as ``inet_tls_dist`` uses them to connect); a file with
    only ``server`` options lends those (the node's own certificate, key and CA), so the file
    the nodes use works as it is. Read: ``certfile``, ``keyfile``, ``cacertfile``,
    ``verify`` (``verify_peer``, the default here, or ``verify_none``) and
    ``server_name_indication`` (``disable``: no host name check; a string: check that name).
    ``customize_hostname_check`` with ``public_key:pkix_verify_hostname_match_fun(https)``
    is what Python does anyway (wildcards); ``password``, ``verify_fun``, ``crl_check`` and
    other ``customize_hostname_check`` forms cannot be mirrored and are refused, so that a
    check the cluster relies on is never silently dropped.
    """
    p = Path(path).expanduser().absolute()
    source = str(p)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"ssl_dist_optfile {p} does not exist") from None
    term = parse_optfile_text(raw.decode(_encoding(raw)), source)
    if not isinstance(term, list):
        raise ValueError(f"{source}: expected [{{server, [...]}}, {{client, [...]}}], got {term!r}")
    sides: dict[str, dict[str, Any]] = {}
    for item in term:
        if not (isinstance(item, tuple) and len(item) == 2 and item[0] in ("server", "client")):
            raise ValueError(
                f"{source}: expected {{server, [...]}} or {{client, [...]}}, got {item!r}"
            )
        sides.setdefault(str(item[0]), _options(item[1], str(item[0]), source))
    if "client" in sides:
        opts = sides["client"]
    elif "server" in sides:
        opts = {k: v for k, v in sides["server"].items() if k != "verify"}
    else:
        raise ValueError(f"{source}: neither client nor server options")
    for key in ("password", "verify_fun", "crl_check", "crl_cache", "cacerts", "cert", "key"):
        if key in opts:
            raise ValueError(
                f"{source}: the client option {key} cannot be used from Python; build an "
                "ssl.SSLContext yourself and pass it as tls="
            )
    verify = opts.get("verify", Atom("verify_peer"))
    if verify not in ("verify_peer", "verify_none"):
        raise ValueError(f"{source}: verify must be verify_peer or verify_none, got {verify!r}")
    check_hostname, name = True, None
    sni = opts.get("server_name_indication")
    if sni == "disable" and isinstance(sni, Atom):
        check_hostname = False
    elif isinstance(sni, str) and not isinstance(sni, Atom):
        name = sni
    elif sni is not None:
        raise ValueError(f"{source}: server_name_indication must be a string or disable")
    custom = opts.get("customize_hostname_check")
    if custom is not None and custom != [(Atom("match_fun"), _HTTPS_MATCH)]:
        raise ValueError(
            f"{source}: customize_hostname_check {custom!r} cannot be mirrored from Python "
            "(only public_key:pkix_verify_hostname_match_fun(https), what Python does); pass "
            "TlsConfig(..., server_name=...) or check_hostname=False instead"
        )
    unknown = set(opts) - _IGNORED - _READ
    if unknown:
        raise ValueError(
            f"{source}: client options {sorted(unknown)} are not understood here; build an "
            "ssl.SSLContext yourself and pass it as tls="
        )
    base = p.parent
    return TlsConfig(
        certfile=_path(opts, "certfile", base, source),
        keyfile=_path(opts, "keyfile", base, source),
        cafile=_path(opts, "cacertfile", base, source),
        server_name=name,
        check_hostname=check_hostname and verify == "verify_peer",
        verify=verify == "verify_peer",
        source=source,
    )


_HTTPS_MATCH = Call("public_key", "pkix_verify_hostname_match_fun", (Atom("https"),))
