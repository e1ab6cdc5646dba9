"""A real SMTP server for the delivery tests: aiosmtpd in a thread, with TLS and AUTH.

``SmtpServer`` records every message it accepts and can be scripted per
recipient: answer a command with a given reply once (``451 ...`` then the
normal 250; a 421 also closes the connection, as real servers do), drop the
connection at RCPT, or drop it after the final dot (before or after storing
the message) to create the ambiguous case.

It offers ESMTP PIPELINING (RFC 2920) unless told not to: aiosmtpd does not
announce it, but reads commands from a buffered stream and answers them in
order, so pipelined commands work once the EHLO line is added. Each MAIL
FROM notes whether the client's RCPT TO and DATA had already arrived with it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import ssl
import threading
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

USER, PASSWORD = "relmail", "s3cret-test-password"


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1; returns (cert, key) PEM paths."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


class Handler:
    """Stores messages; ``script`` holds one-shot actions per (stage, recipient)."""

    def __init__(self, pipelining: bool = True):
        self.pipelining = pipelining
        #: Per MAIL FROM: were RCPT TO and DATA already waiting behind it (sent in one write)?
        self.pipelined: list[bool] = []
        self.messages: list[Received] = []
        self.connections = 0
        self.transactions = 0
        self.logins: list[str] = []
        self._script: dict[tuple[str, str], deque[str]] = defaultdict(deque)
        self._lock = threading.Lock()

    def script(self, stage: str, rcpt: str, *actions: str) -> None:
        """Queue actions for ``stage`` ('rcpt' or 'data') and recipient: a reply like
        '451 4.3.0 later', or 'drop', 'drop-after-store'; at RCPT, 'lenient:' before a
        refusal keeps the recipient anyway, so that DATA is accepted (a broken server)."""
        self._script[(stage, rcpt)].extend(actions)

    def _next(self, stage: str, rcpt: str) -> str | None:
        with self._lock:
            q = self._script.get((stage, rcpt))
            return q.popleft() if q else None

    def received_by(self, rcpt: str) -> list[Received]:
        return [m for m in self.messages if rcpt in m.rcpt_tos]

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")  # before the last line, '250 HELP'
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        waiting = bytes(server._reader._buffer)
        self.pipelined.append(b"RCPT TO:" in waiting.upper() and b"DATA\r\n" in waiting.upper())
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        action = self._next("rcpt", address)
        if action == "drop":
            server.transport.abort()
            return "421 4.4.2 dropped"
        if action and action.startswith("lenient:"):
            envelope.rcpt_tos.append(address)
            return action.removeprefix("lenient:")
        if action:
            return _closing(server, action)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        action = self._next("data", envelope.rcpt_tos[0])
        if action == "drop":
            server.transport.abort()
            return "421 4.4.2 dropped"
        if action and action != "drop-after-store":
            return _closing(server, action)
        with self._lock:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
            n = len(self.messages)
        if action == "drop-after-store":
            server.transport.abort()
            return "421 4.4.2 dropped"
        return f"250 2.0.0 Ok: queued as Q{n:05d}"


def _closing(server, reply: str) -> str:
    """``reply``; a 421 also closes the connection once it is written, as RFC 5321 says."""
    if reply.startswith("421"):
        asyncio.get_running_loop().call_soon(server.transport.close)
    return reply


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SmtpServer:
    """Runs a :class:`Handler` on 127.0.0.1; ``mode`` is 'plain', 'starttls' or 'tls'."""

    def __init__(self, folder: Path, mode: str = "starttls", auth: bool = True, pipelining: bool = True):
        self.handler = Handler(pipelining)
        self.mode = mode
        self.cert, self.key = make_certificate(folder)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        self.port = free_port()
        kwargs: dict = {"hostname": "127.0.0.1", "port": self.port}
        if mode == "starttls":
            kwargs.update(tls_context=ctx, require_starttls=True)
        elif mode == "tls":
            kwargs.update(ssl_context=ctx)
        if auth:
            kwargs.update(authenticator=self._authenticate, auth_required=True, auth_require_tls=mode == "starttls")
            # aiosmtpd only counts STARTTLS as TLS; implicit TLS is encrypted from the first byte.
        self.controller = Controller(self.handler, **kwargs)

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == USER and auth_data.password.decode() == PASSWORD
        if ok:
            self.handler.logins.append(mechanism)
        return AuthResult(success=ok, handled=False)

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()

    def config(self, **extra) -> dict:
        """Adapter settings that reach this server and trust its certificate."""
        security = {"plain": "none", "starttls": "starttls", "tls": "tls"}[self.mode]
        cfg = {"host": "127.0.0.1", "port": self.port, "security": security, "helo": "relmail.test", "timeout": 5}
        if self.mode != "plain":
            cfg["ca_file"] = str(self.cert)
        return {**cfg, **extra}
