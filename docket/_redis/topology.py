"""What a docket URL says about the Redis behind it: one server, a Sentinel-watched
primary, a Cluster, or the in-process engine.

Sentinel and Cluster URLs list several hosts in one netloc
(``redis+sentinel://s1:26379,s2:26379/mymaster``), which ``urlsplit`` can read but not
split, so the members are split here and each parsed on its own. Query options mean what
they mean on a ``redis://`` URL (redis-py parses them); ``sentinel_username`` and
``sentinel_password`` are the Sentinel daemons' own credentials, as in the released
docket.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from redis.asyncio.connection import parse_url

Kind = Literal["standalone", "memory", "sentinel", "cluster"]

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
STANDALONE_SCHEMES = ("redis", "rediss", "unix")
SUPPORTED_SCHEMES = (*STANDALONE_SCHEMES, *SENTINEL_SCHEMES, *CLUSTER_SCHEMES, "memory")

DEFAULT_SENTINEL_PORT = 26379
DEFAULT_REDIS_PORT = 6379

# Options the Sentinel URL consumes itself rather than handing to the data connections.
_SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")


@dataclass(frozen=True)
class Topology:
    """A parsed docket URL. ``hosts`` are the sentinels (Sentinel) or the startup nodes
    (Cluster); ``options`` are keyword arguments for the data connections, as redis-py
    takes them; ``sentinel_options`` for the connections to the Sentinel daemons."""

    kind: Kind
    url: str
    tls: bool = False
    hosts: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    sentinel_options: dict[str, Any] = field(default_factory=dict)
    query: dict[str, list[str]] = field(default_factory=dict)
    """The URL's query options left for the data connections, unparsed."""
    userinfo: str = ""
    """The data connections' ``user:password``, as written in the URL."""


def parse_topology(url: str) -> Topology:
    """Read ``url``; a ValueError names what is wrong with it."""
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme not in SUPPORTED_SCHEMES:
        raise ValueError(
            f"Unsupported docket URL {redact_url(url)!r}: the scheme must be one of "
            + ", ".join(f"{s}://" for s in SUPPORTED_SCHEMES)
        )
    if scheme == "memory":
        return Topology("memory", url)
    if scheme in STANDALONE_SCHEMES:
        return Topology("standalone", url, tls=scheme == "rediss")
    if scheme in SENTINEL_SCHEMES:
        return _sentinel(url, scheme)
    return _cluster(url, scheme)


def _split(url: str) -> tuple[str, str, str, str]:
    """userinfo, hosts, path and query of a multi-host URL."""
    rest = url.partition("://")[2]
    end = min((i for i in (rest.find(c) for c in "/?#") if i != -1), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    userinfo, _, hosts = netloc.rpartition("@")
    parts = urlsplit("x://h" + tail)
    return userinfo, hosts, parts.path, parts.query


def _members(url: str, hosts: str, default_port: int, what: str) -> tuple[tuple[str, int], ...]:
    members: list[tuple[str, int]] = []
    for member in hosts.split(","):
        member = member.strip()
        if not member:
            continue
        parts = urlsplit("//" + member)
        if not parts.hostname:
            raise ValueError(
                f"Invalid docket URL {redact_url(url)!r}: {what} {member!r} has no host"
            )
        try:
            port = parts.port
        except ValueError:
            raise ValueError(
                f"Invalid docket URL {redact_url(url)!r}: {what} {member!r} has an invalid port"
            ) from None
        members.append((parts.hostname, port or default_port))
    if not members:
        raise ValueError(f"Invalid docket URL {redact_url(url)!r}: it names no {what}")
    return tuple(members)


def _connection_options(
    url: str, userinfo: str, query: dict[str, list[str]], tls: bool
) -> dict[str, Any]:
    """The data connections' keyword arguments: credentials from the userinfo, the query
    options parsed as redis-py parses a ``redis://`` URL's."""
    base = "rediss" if tls else "redis"
    credentials = userinfo + "@" if userinfo else ""
    try:
        options: dict[str, Any] = dict(
            parse_url(f"{base}://{credentials}placeholder/?{urlencode(query, doseq=True)}")
        )
    except ValueError as error:
        raise ValueError(f"Invalid docket URL {redact_url(url)!r}: {error}") from None
    for key in ("host", "port", "path", "connection_class", "db"):
        options.pop(key, None)
    if tls:
        options["ssl"] = True
    return options


def _sentinel(url: str, scheme: str) -> Topology:
    userinfo, hosts, path, raw_query = _split(url)
    sentinels = _members(url, hosts, DEFAULT_SENTINEL_PORT, "sentinel")
    segments = [unquote(s) for s in path.split("/") if s]
    if not segments:
        raise ValueError(
            f"Invalid docket URL {redact_url(url)!r}: a Sentinel URL names the service "
            "after the hosts, e.g. redis+sentinel://localhost:26379/mymaster"
        )
    if len(segments) > 2:
        raise ValueError(
            f"Invalid docket URL {redact_url(url)!r}: expected /service_name[/db] after "
            f"the hosts, got {path!r}"
        )
    db = 0
    if len(segments) == 2:
        try:
            db = int(segments[1])
        except ValueError:
            raise ValueError(
                f"Invalid docket URL {redact_url(url)!r}: the database {segments[1]!r} is "
                "not a number"
            ) from None
    tls = scheme == "rediss+sentinel"
    query = parse_qs(raw_query, keep_blank_values=True)
    sentinel_options: dict[str, Any] = {}
    for name in _SENTINEL_OPTIONS:
        value = query.pop(name, [""])[-1]
        if value:
            sentinel_options[name.removeprefix("sentinel_")] = value
    options = _connection_options(url, userinfo, query, tls)
    if tls:
        sentinel_options["ssl"] = True
        sentinel_options.update({k: v for k, v in options.items() if k.startswith("ssl_")})
    return Topology(
        "sentinel",
        url,
        tls=tls,
        hosts=sentinels,
        service=segments[0],
        db=db,
        options=options,
        sentinel_options=sentinel_options,
        query=query,
        userinfo=userinfo,
    )


def _cluster(url: str, scheme: str) -> Topology:
    userinfo, hosts, path, raw_query = _split(url)
    nodes = _members(url, hosts, DEFAULT_REDIS_PORT, "cluster node")
    if path.strip("/") not in ("", "0"):
        raise ValueError(
            f"Invalid docket URL {redact_url(url)!r}: a Redis Cluster has only database "
            f"0, and the URL asks for {path.strip('/')!r}"
        )
    tls = scheme == "rediss+cluster"
    query = parse_qs(raw_query, keep_blank_values=True)
    return Topology(
        "cluster",
        url,
        tls=tls,
        hosts=nodes,
        options=_connection_options(url, userinfo, query, tls),
        query=query,
        userinfo=userinfo,
    )


def redact_url(url: str) -> str:
    """The URL with any password replaced, safe for logs and reprs."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min((i for i in (rest.find(c) for c in "/?#") if i != -1), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = userinfo.partition(":")[0] + ":***@" + hosts
    query_start = tail.find("?")
    if query_start != -1:
        # Sentinel URLs carry the sentinels' password as a query option.
        query = parse_qs(tail[query_start + 1 :].partition("#")[0], keep_blank_values=True)
        if "sentinel_password" in query:
            query["sentinel_password"] = ["***"]
            tail = tail[:query_start] + "?" + urlencode(query, doseq=True, safe="*")
    return f"{scheme}://{netloc}{tail}"
