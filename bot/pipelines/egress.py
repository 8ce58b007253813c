"""The egress policy for URLs a webhook names (generic `callback_url`, Jenkins `input_url`).

`QUORUM_EGRESS_ALLOW` lists hosts (`ci.example.com`), wildcards (`*.example.com`: any name
under it, not the name itself) and CIDRs or addresses (`10.1.0.0/16`, `fd00::/8`, `127.0.0.1`).
Public addresses are always allowed; loopback, private, link-local, multicast, unspecified,
reserved, shared (CGNAT) and cloud metadata addresses only when allowed. `http` needs the host
to be listed; everything else must be `https`.

A URL is checked twice: at intake (`EgressPolicy.url_refusal`, on the URL as written) and at
connect time, on every address its name resolves to (`EgressResolver`, the resolver of the
session that sends these calls), so a name that resolves to a public address at intake and to
127.0.0.1 later (DNS rebinding) is still refused. An address literal is never resolved, so it
is checked again right before each attempt instead.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import Final

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from bot.pipelines.base import FieldError, InboundError

__all__ = [
    "EgressConfigError",
    "EgressPolicy",
    "EgressRefused",
    "EgressResolver",
    "UrlRefused",
    "address_kind",
    "egress_session",
    "host_of",
]

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

# Cloud instance metadata services: refused unless the exact address is listed.
METADATA_ADDRESSES: Final = frozenset(
    ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, …
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.253",  # AWS DNS
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::253",
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
    )
)
METADATA_NAMES: Final = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
_CGNAT: Final = ip_network("100.64.0.0/10")
_NAT64: Final = ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE: Final = ip_network("::/96")
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_NUMERIC_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)")


class EgressConfigError(ValueError):
    """QUORUM_EGRESS_ALLOW has an entry that is not a host, wildcard, address or CIDR."""


class UrlRefused(InboundError):
    """An authentic, well-formed webhook naming a URL Quorum may not call → HTTP 422 naming
    each field (`callback_url`, `jenkins.input_url`); nothing is recorded."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in self.errors))


class EgressRefused(OSError):
    """A connection the egress policy refuses. An `OSError`, so that aiohttp's connector turns
    it into a `ClientConnectorDNSError` whose `os_error` it is; `reason` names only the host the
    pipeline named and the kind of address, never the address it resolved to."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def address_kind(address: Address) -> str | None:
    """Why `address` is not a public one ("loopback", "private", …), or None when it is."""
    if address in METADATA_ADDRESSES:
        return "cloud metadata"
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return address_kind(embedded)
    if address.is_loopback:
        return "loopback"
    if address.is_unspecified:
        return "unspecified"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, IPv4Address) and address in _CGNAT:
        return "shared (CGNAT)"
    if address.is_reserved:
        return "reserved"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "non-public"
    return None


def _embedded_ipv4(address: Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, compatible, NAT64, 6to4)."""
    if not isinstance(address, IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _normal_host(host: str) -> str:
    return host.lower().removesuffix(".").removeprefix("[").removesuffix("]")


def _parse_address(host: str) -> Address | None:
    try:
        return ip_address(host)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Which non-public destinations a webhook-named URL may reach (empty: none)."""

    hosts: frozenset[str] = frozenset()
    wildcards: tuple[str, ...] = ()  # suffixes, each starting with "."
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, text: str) -> EgressPolicy:
        """Comma- or space-separated entries; raises EgressConfigError naming the bad entry."""
        hosts: set[str] = set()
        wildcards: list[str] = []
        networks: list[Network] = []
        for entry in (e for e in re.split(r"[\s,]+", text.strip()) if e):
            token = entry.lower()
            if "://" in token:
                raise EgressConfigError(f"{entry!r} is a URL; list its host name only")
            if "/" in token:
                try:
                    networks.append(ip_network(token.strip("[]"), strict=True))
                except ValueError as exc:
                    raise EgressConfigError(f"{entry!r} is not a valid CIDR ({exc})") from None
            elif (address := _parse_address(_normal_host(token))) is not None:
                networks.append(ip_network(address))
            elif token.startswith("*."):
                name = _hostname(token[2:], entry)
                wildcards.append("." + name)
            else:
                hosts.add(_hostname(token, entry))
        return cls(frozenset(hosts), tuple(wildcards), tuple(networks))

    def with_hosts(self, names: Iterable[str]) -> EgressPolicy:
        """This policy with more hosts allowed explicitly (e.g. JENKINS_URL's)."""
        extra = {_normal_host(n) for n in names if n}
        return EgressPolicy(self.hosts | extra, self.wildcards, self.networks)

    def __bool__(self) -> bool:
        return bool(self.hosts or self.wildcards or self.networks)

    # --- decisions ------------------------------------------------------------------------

    def names_host(self, host: str) -> bool:
        """Whether `host` itself is listed: by name, by wildcard, or as an address in a CIDR."""
        name = _normal_host(host)
        address = _parse_address(name)
        if address is not None:
            return self._lists_address(address)
        return name in self.hosts or any(name.endswith(w) for w in self.wildcards)

    def _lists_address(self, address: Address) -> bool:
        candidates = [address]
        if (embedded := _embedded_ipv4(address)) is not None:
            candidates.append(embedded)
        return any(a.version == n.version and a in n for a in candidates for n in self.networks)

    def address_refusal(self, host: str, address: Address) -> str | None:
        """Why connecting to `address` (what `host` resolved to) is refused, or None."""
        kind = address_kind(address)
        if kind is None:
            return None
        if kind == "cloud metadata":
            listed = any(n.num_addresses == 1 and address in n for n in self.networks)
            if listed:
                return None
        elif self._lists_address(address) or (
            _parse_address(_normal_host(host)) is None and self.names_host(host)
        ):
            return None
        verb = "is" if _parse_address(_normal_host(host)) is not None else "resolves to"
        return f"{_normal_host(host)} {verb} {_a(kind)} address"

    def url_refusal(self, url: str) -> str | None:
        """Why a webhook-named `url` is refused, or None. Checks the URL as written: its scheme,
        credentials, how its host is spelled, and an address literal's kind."""
        if "\\" in url or any(c.isspace() or ord(c) < 0x20 for c in url):
            return "must not contain backslashes, whitespace or control characters"
        try:
            parsed = URL(url)
        except (ValueError, TypeError):
            return "is not a valid URL"
        if parsed.scheme not in ("http", "https") or not parsed.raw_host:
            return "must be an absolute http(s) URL"
        if parsed.raw_user is not None or parsed.raw_password is not None:
            return "must not carry credentials (user@host)"
        host = _normal_host(parsed.raw_host)
        address = _parse_address(host)
        if address is None and _numeric_spelling(host):
            return "must write an IPv4 address as four decimal numbers (a.b.c.d)"
        if address is None and not self.names_host(host):
            kind = _named_kind(host)
            if kind is not None:
                return _refused(f"{host} is {_a(kind)} name")
        if address is not None and (reason := self.address_refusal(host, address)):
            return _refused(reason)
        if parsed.scheme == "http" and not self.names_host(host):
            return "must use https (http only for hosts listed in QUORUM_EGRESS_ALLOW)"
        return None


def _a(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def host_of(url: str) -> str:
    """The host a URL names, as the policy compares it ("" when it names none)."""
    try:
        return _normal_host(URL(url).raw_host or "")
    except (ValueError, TypeError):
        return ""


def _refused(reason: str) -> str:
    return f"refused by the egress policy: {reason}; allow it in QUORUM_EGRESS_ALLOW"


def _hostname(name: str, entry: str) -> str:
    name = name.removesuffix(".")
    labels = name.split(".")
    if not name or not all(_LABEL.fullmatch(label) for label in labels):
        raise EgressConfigError(f"{entry!r} is not a host name, *.wildcard, IP address or CIDR")
    return name


def _numeric_spelling(host: str) -> bool:
    """A host the resolver would read as an IPv4 address although it is not a dotted quad
    (`2130706433`, `0x7f.1`, `017700000001`): a URL's last numeric label makes it one."""
    last = host.rsplit(".", 1)[-1]
    return bool(_NUMERIC_LABEL.fullmatch(last))


def _named_kind(host: str) -> str | None:
    if host == "localhost" or host.endswith(".localhost"):
        return "loopback"
    if host in METADATA_NAMES:
        return "cloud metadata"
    return None


# --- Connect time -------------------------------------------------------------------------------


class EgressResolver(AbstractResolver):
    """Resolves with `inner` (aiohttp's default resolver) and keeps only the addresses the policy
    allows; raises `EgressRefused` when none is left, so nothing is connected to."""

    def __init__(self, policy: EgressPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is None:
            self._inner = DefaultResolver()
        results = await self._inner.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        refusal = f"{_normal_host(host)} did not resolve"
        for result in results:
            address = _parse_address(str(result["host"]).split("%", 1)[0])
            reason = (
                f"{_normal_host(host)} resolves to an unreadable address"
                if address is None
                else self._policy.address_refusal(host, address)
            )
            if reason is None:
                allowed.append(result)
            else:
                refusal = reason
        if not allowed:
            raise EgressRefused(refusal)
        return allowed

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


def egress_session(
    policy: EgressPolicy, *, resolver: AbstractResolver | None = None
) -> aiohttp.ClientSession:
    """A session for webhook-named URLs: every name it connects to goes through the policy;
    no proxy or netrc from the environment. Call with a running event loop; the caller closes
    it."""
    connector = aiohttp.TCPConnector(resolver=EgressResolver(policy, resolver), limit=100)
    return aiohttp.ClientSession(connector=connector, trust_env=False)


_ENCODED_SEPARATORS = re.compile(r"%(2e|2f|5c)", re.IGNORECASE)


def url_under(url: str, base: str) -> bool:
    """Whether `url` names a path under `base` (e.g. JENKINS_URL) as the HTTP client will send it:
    same scheme, host and port, no credentials, and a path below base's once dot segments are
    resolved. Dot segments, encoded dots or slashes and backslashes are refused outright, since
    the client (yarl) resolves `..` before sending: a string prefix check alone lets
    `{base}../other-app/` carry base's credentials to another application on the same host."""
    if "\\" in url or _ENCODED_SEPARATORS.search(url):
        return False
    try:
        target, root = URL(url), URL(base)
        target_port, root_port = target.port, root.port
    except ValueError:
        return False
    if any(segment in (".", "..") for segment in url.split("?")[0].split("/")[3:]):
        return False
    if (
        not target.is_absolute()
        or target.scheme.lower() != root.scheme.lower()
        or (target.host or "").lower().rstrip(".") != (root.host or "").lower().rstrip(".")
        or target_port != root_port
        or target.user is not None
        or target.password is not None
    ):
        return False
    prefix = root.path if root.path.endswith("/") else root.path + "/"
    path = target.path if target.path.endswith("/") else target.path + "/"
    return path.startswith(prefix)
