"""Sentinel and Cluster URLs: what they are read as, and the errors bad ones get.

Only parsing here; the servers themselves are in test_sentinel.py and test_cluster.py.
"""

from __future__ import annotations

import pytest

from docket import Docket
from docket._redis.topology import parse_topology, redact_url


def test_a_sentinel_url_names_its_sentinels_service_and_database() -> None:
    topology = parse_topology("redis+sentinel://user:pw@s1:26380,s2,[::1]:26381/mymaster/3")
    assert topology.kind == "sentinel"
    assert topology.hosts == (("s1", 26380), ("s2", 26379), ("::1", 26381))
    assert topology.service == "mymaster"
    assert topology.db == 3
    assert topology.options["username"] == "user"
    assert topology.options["password"] == "pw"
    assert not topology.tls


def test_sentinel_credentials_and_data_options_go_their_own_ways() -> None:
    topology = parse_topology(
        "rediss+sentinel://s1/svc?sentinel_username=watch&sentinel_password=secret"
        "&max_connections=7&ssl_ca_certs=/ca.pem"
    )
    assert topology.tls
    assert topology.sentinel_options == {
        "username": "watch",
        "password": "secret",
        "ssl": True,
        "ssl_ca_certs": "/ca.pem",
    }
    assert topology.options["max_connections"] == 7
    assert topology.options["ssl"] is True
    assert "sentinel_password" not in topology.query


def test_a_cluster_url_lists_its_startup_nodes() -> None:
    topology = parse_topology("redis+cluster://:pw@n1:7000,n2:7001,n3")
    assert topology.kind == "cluster"
    assert topology.hosts == (("n1", 7000), ("n2", 7001), ("n3", 6379))
    assert topology.options["password"] == "pw"
    assert parse_topology("rediss+cluster://n1:7000").tls


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("redis+sentinel://s1:26379", "names the service after the hosts"),
        ("redis+sentinel://s1:26379/", "names the service after the hosts"),
        ("redis+sentinel:///mymaster", "names no sentinel"),
        ("redis+sentinel://s1:port/mymaster", "has an invalid port"),
        ("redis+sentinel://s1/mymaster/one", "the database 'one' is not a number"),
        ("redis+sentinel://s1/mymaster/0/extra", "expected /service_name[/db]"),
        ("redis+cluster://", "names no cluster node"),
        ("redis+cluster://n1:7000/2", "has only database 0"),
        ("redis+cluster://n1:99999999", "has an invalid port"),
        ("redis+sentinel://s1/svc?max_connections=lots", "Invalid docket URL"),
        ("kafka://broker:9092", "the scheme must be one of"),
    ],
)
def test_a_bad_url_is_refused_with_what_is_wrong(url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match="URL") as caught:
        parse_topology(url)
    assert complaint in str(caught.value)


def test_a_docket_refuses_a_bad_sentinel_url_when_made() -> None:
    with pytest.raises(ValueError, match="names the service"):
        Docket(name="d", url="redis+sentinel://s1:26379")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://u:pw@h:1/0", "redis://u:***@h:1/0"),
        ("redis+sentinel://:pw@s1,s2:26380/svc", "redis+sentinel://:***@s1,s2:26380/svc"),
        (
            "redis+sentinel://s1/svc?sentinel_password=hush&db=1",
            "redis+sentinel://s1/svc?sentinel_password=***&db=1",
        ),
        ("redis+cluster://n1:7000,n2:7001", "redis+cluster://n1:7000,n2:7001"),
    ],
)
def test_passwords_never_show_in_a_redacted_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert repr(Docket(name="d", url=url)) == f"Docket(name='d', url={shown!r})"
