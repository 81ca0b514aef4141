"""A ``rediss://`` docket works end to end against a private TLS redis-server.

Each test makes a throwaway CA and a server certificate for 127.0.0.1 with the
``openssl`` CLI, and starts its own redis-server that also listens for TLS on a
second port. The server keeps its plain loopback port only so the fixture's
readiness probe (plain RESP over a socket) can reach it; the docket under test
talks to the TLS port alone, which refuses plain connections.

The tests skip only when this build of redis-server has no TLS support.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
from _redis_server import RedisServer, RedisServerError, free_port
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from docket import Docket, Worker

HOST = "127.0.0.1"
_TLS_PORT_ATTEMPTS = 3


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class TlsServer:
    server: RedisServer
    tls_port: int
    certificates: Certificates

    def url(self, **query: str) -> str:
        suffix = f"?{urlencode(query)}" if query else ""
        return f"rediss://{HOST}:{self.tls_port}/0{suffix}"

    @property
    def verified_url(self) -> str:
        """The URL a careful client uses: verify the certificate against our CA."""
        return self.url(
            ssl_cert_reqs="required",
            ssl_ca_certs=str(self.certificates.ca),
            ssl_check_hostname="true",
        )


def _openssl(*args: str | Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the TLS tests need the openssl CLI on PATH to make throwaway certificates")
    result = subprocess.run(
        [openssl, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"openssl {' '.join(map(str, args))} failed:\n{result.stderr}")


def make_certificates(directory: Path) -> Certificates:
    """A throwaway CA, and a server certificate it signed for 127.0.0.1 and localhost."""
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / "server.pem", directory / "server.key", directory / "server.csr"
    extensions = directory / "server.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        "-subj", "/CN=docket test CA", "-keyout", ca_key, "-out", ca,
        # Python 3.13 verifies strictly (VERIFY_X509_STRICT): the CA needs these.
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes",
        "-subj", f"/CN={HOST}", "-keyout", key, "-out", csr,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-days", "1", "-extfile", extensions, "-out", cert,
    )  # fmt: skip
    return Certificates(ca=ca, cert=cert, key=key)


def _lacks_tls(log: str) -> bool:
    """Whether a failed start says this redis-server was built without TLS.

    Builds without TLS reject the tls-* options as unknown directives (Redis 6/7.0),
    or report that the "tls" connection type is not available (Redis 7.2+ built
    without it, or with TLS as a module that is not loaded).
    """
    # The command line (full of tls-* options) is part of the error, so look only at
    # the directive the server quotes as the bad one.
    if "Bad directive" in log and re.search(r">>> 'tls-", log):
        return True
    return "connection type tls" in log.lower()


@pytest.fixture
def tls_server(tmp_path: Path, redis_server_factory: Callable[..., RedisServer]) -> TlsServer:
    certificates = make_certificates(tmp_path)
    failures: list[str] = []
    for _ in range(_TLS_PORT_ATTEMPTS):
        tls_port = free_port()
        try:
            server = redis_server_factory(
                [
                    "--tls-port", str(tls_port),
                    "--tls-cert-file", str(certificates.cert),
                    "--tls-key-file", str(certificates.key),
                    "--tls-ca-cert-file", str(certificates.ca),
                    # The server checks no client certificate; the client checks the server's.
                    "--tls-auth-clients", "no",
                ]
            )  # fmt: skip
        except RedisServerError as error:
            if _lacks_tls(str(error)):
                pytest.skip(f"this redis-server was built without TLS support: {error}")
            # Most likely someone took the TLS port between our pick and the bind.
            failures.append(str(error))
            continue
        return TlsServer(server=server, tls_port=tls_port, certificates=certificates)
    pytest.fail(
        f"could not start a TLS redis-server in {_TLS_PORT_ATTEMPTS} attempts:\n"
        + "\n".join(failures)
    )


async def test_a_rediss_docket_runs_a_task_end_to_end(
    tls_server: TlsServer, docket_name: str
) -> None:
    ran: list[str] = []

    async def greet(name: str) -> str:
        ran.append(name)
        return f"hello, {name}"

    async with Docket(name=docket_name, url=tls_server.verified_url) as docket:
        execution = await docket.add(greet, key="greeting")("tls")
        async with Worker(
            docket,
            minimum_check_interval=timedelta(milliseconds=5),
            scheduling_resolution=timedelta(milliseconds=5),
        ) as worker:
            await worker.run_until_finished()

        assert ran == ["tls"]
        assert await execution.get_result() == "hello, tls"

    # The docket's data landed on this server (seen through its plain port)...
    keys = tls_server.server.execute_command("KEYS", f"*{docket_name}*")
    assert keys, "the docket wrote nothing to the TLS server"
    # ...and the port the docket used speaks TLS only, so a plain client cannot use it.
    plain = Redis.from_url(f"redis://{HOST}:{tls_server.tls_port}/0", socket_timeout=2)
    try:
        with pytest.raises((RedisConnectionError, RedisTimeoutError)):
            await plain.ping()
    finally:
        await plain.aclose()


async def test_a_rediss_docket_refuses_a_server_it_cannot_verify(
    tls_server: TlsServer, docket_name: str
) -> None:
    # Without our CA the certificate chains to nothing the client trusts.
    url = tls_server.url(ssl_cert_reqs="required")
    # Redis may send our CA along with its certificate; either way the chain ends in a
    # certificate the client has no reason to trust (wording varies by OpenSSL version).
    untrusted = r"self.signed certificate in certificate chain|unable to get local issuer"
    with pytest.raises(ConnectionError, match=rf"certificate verify failed: ({untrusted})"):
        async with Docket(name=docket_name, url=url):
            pass  # pragma: no cover - entering must fail


@pytest.mark.parametrize(
    ("log", "lacks"),
    [
        # Redis 6 and 7.0 built without TLS do not know the option at all.
        (">>> 'tls-port \"6380\"'\nBad directive or wrong number of arguments", True),
        # Redis 7.2+ knows it but has no TLS connection type to serve it with.
        ("Missing implement of connection type tls", True),
        # Other failures are real failures, not a reason to skip.
        (
            "command: redis-server --tls-port 6380 --bogus 1\n"
            ">>> 'bogus \"1\"'\nBad directive or wrong number of arguments",
            False,
        ),
        ("Address already in use", False),
    ],
    ids=["unknown-tls-option", "no-tls-connection-type", "other-bad-option", "port-taken"],
)
def test_only_a_build_without_tls_is_skipped(log: str, lacks: bool) -> None:
    assert _lacks_tls(log) is lacks
