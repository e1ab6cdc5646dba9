"""SMTP throughput: relmail's pooled adapter vs one smtplib connection per message.

Both send to the same local SMTP sink (aiosmtpd in its own process, a
handler that accepts and discards) in the same run:

* baseline: what naive code does, ``with smtplib.SMTP(...) as s: s.sendmail(...)``
  for every message (connect, greeting, EHLO, MAIL, RCPT, DATA, QUIT);
* relmail: ``SmtpAdapter`` with ``--pool`` connections in parallel, each
  reused for ``--per-connection`` messages.

Usage::

    python bench/bench_smtp.py                 # 5,000 messages
    python bench/bench_smtp.py --messages 500 --json
    python bench/bench_smtp.py --security starttls --latency-ms 5 --pool 8   # a relay across a network
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import smtplib
import socket
import sys
import time


def _sink(port: int, ready, stop, cert: str | None = None, key: str | None = None, latency: float = 0.0) -> None:
    import asyncio
    import ssl

    from aiosmtpd.controller import Controller

    class Discard:
        """Accepts and discards; ``latency`` delays every reply, as a relay across a network would."""

        async def handle_EHLO(self, server, session, envelope, hostname, responses):
            await asyncio.sleep(latency)
            session.host_name = hostname
            return responses

        async def handle_MAIL(self, server, session, envelope, address, mail_options):
            await asyncio.sleep(latency)
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
            return "250 OK"

        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            await asyncio.sleep(latency)
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):
            await asyncio.sleep(latency)
            return "250 2.0.0 Ok: queued as X"

    kwargs = {}
    if cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        kwargs["tls_context"] = ctx
    controller = Controller(Discard(), hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    ready.set()
    stop.wait()
    controller.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TEMPLATE = (
    b"From: Fietsenwinkel <news@fietsenwinkel.example>\r\n"
    b"To: klant{i}@example.org\r\n"
    b"Subject: Nieuwe e-bike voor klant {i}\r\n"
    b"Message-ID: <bench.{i}@fietsenwinkel.example>\r\n"
    b"List-Unsubscribe: <https://fietsenwinkel.example/relmail/unsubscribe/tok{i}>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    + b"Hallo klant {i}, hier is een persoonlijke tip over je fiets.\r\n" * 40
)


def build(n: int):
    from relmail.delivery import OutgoingMessage

    return [
        OutgoingMessage(
            key=f"bench:C{i:07d}:tip",
            to=f"klant{i}@example.org",
            from_addr="news@fietsenwinkel.example",
            subject=f"Nieuwe e-bike voor klant {i}",
            raw=TEMPLATE.replace(b"{i}", str(i).encode()),
        )
        for i in range(n)
    ]


def _certificate(folder: str) -> tuple[str, str]:
    """A throw-away self-signed certificate for the sink's STARTTLS."""
    import datetime as dt
    import os

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    with open(cert_path, "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


def baseline(port: int, messages, tls: bool) -> float:
    import ssl

    ctx = ssl._create_unverified_context()  # the bench sink's self-signed certificate
    start = time.perf_counter()
    for m in messages:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="bench.local") as s:
            if tls:
                s.starttls(context=ctx)
            s.sendmail(m.from_addr, [m.to], m.raw)
    return time.perf_counter() - start


def pooled(port: int, messages, pool: int, per_connection: int, tls: bool) -> tuple[float, int]:
    from relmail.delivery import get_adapter

    config = {
        "host": "127.0.0.1", "port": port, "security": "starttls" if tls else "none", "helo": "bench.local",
        "verify_tls": False,
        "pool_size": pool, "messages_per_connection": per_connection,
    }
    adapter = get_adapter("smtp", config, {})
    start = time.perf_counter()
    results = adapter.send(messages)
    elapsed = time.perf_counter() - start
    adapter.close()
    return elapsed, sum(r.accepted for r in results)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=5000, help="messages through the pooled adapter")
    p.add_argument("--baseline-messages", type=int, default=None, help="messages for the baseline (default: same, at most 2000)")
    p.add_argument("--pool", type=int, default=4, help="concurrent connections")
    p.add_argument("--per-connection", type=int, default=100, help="messages per connection before reconnecting")
    p.add_argument("--security", choices=("none", "starttls"), default="none", help="plain SMTP or STARTTLS for both methods")
    p.add_argument("--latency-ms", type=float, default=0.0,
                   help="delay every sink reply by this much, like a relay across a network (default 0: loopback)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)

    import tempfile

    tls = args.security == "starttls"
    port = _free_port()
    tmp = tempfile.mkdtemp(prefix="relmail-bench-")
    cert, key = _certificate(tmp) if tls else (None, None)
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    server = ctx.Process(target=_sink, args=(port, ready, stop, cert, key, args.latency_ms / 1000), daemon=True)
    server.start()
    if not ready.wait(30):
        print("SMTP sink did not start", file=sys.stderr)
        return 1
    try:
        messages = build(args.messages)
        n_base = args.baseline_messages or min(args.messages, 2000)
        base_s = baseline(port, messages[:n_base], tls)
        pool_s, ok = pooled(port, messages, args.pool, args.per_connection, tls)
    finally:
        stop.set()
        server.join(10)
    base_rate = n_base / base_s
    pool_rate = args.messages / pool_s
    out = {
        "messages": args.messages,
        "accepted": ok,
        "baseline_messages": n_base,
        "baseline_seconds": round(base_s, 3),
        "baseline_msgs_per_s": round(base_rate, 1),
        "relmail_seconds": round(pool_s, 3),
        "relmail_msgs_per_s": round(pool_rate, 1),
        "security": args.security,
        "latency_ms": args.latency_ms,
        "pool": args.pool,
        "per_connection": args.per_connection,
        "speedup": round(pool_rate / base_rate, 2),
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{'method':<44} {'messages':>9} {'seconds':>9} {'msgs/s':>9}")
        print(f"{'smtplib, one connection per message':<44} {n_base:>9,} {base_s:>9.2f} {base_rate:>9,.0f}")
        label = f"relmail smtp, {args.pool} conns x {args.per_connection} msgs"
        print(f"{label:<44} {args.messages:>9,} {pool_s:>9.2f} {pool_rate:>9,.0f}")
        print(f"security: {args.security}; reply latency: {args.latency_ms:g} ms; "
              f"speed-up: {out['speedup']}x  (accepted {ok:,}/{args.messages:,})")
    return 0 if ok == args.messages else 1


if __name__ == "__main__":
    sys.exit(main())
