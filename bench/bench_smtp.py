"""SMTP throughput: relmail's pooled adapter vs one smtplib connection per message.

Both send to the same local SMTP sink in the same run:

* baseline: what naive code does, ``with smtplib.SMTP(...) as s: s.sendmail(...)``
  for every message (connect, greeting, EHLO, MAIL, RCPT, DATA, QUIT);
* relmail: ``SmtpAdapter`` with ``--pool`` connections in parallel, each
  reused for ``--per-connection`` messages, pipelining the envelope (RFC 2920)
  when the sink offers PIPELINING.

The sink (printed with the results) is Postfix's ``smtp-sink``, a C server
written to benchmark SMTP clients, when it is installed (Debian: package
``postfix``) and the run is plain SMTP; otherwise, and for STARTTLS, which
``smtp-sink`` does not speak, an aiosmtpd server in its own process that
accepts and discards. Both offer PIPELINING unless ``--no-pipelining``.

``--latency-ms`` puts a relay across a network between client and sink: a
proxy in its own process holds every byte from the client for that long
before passing it on. That is a round trip's delay on each exchange, so a
command waiting for its reply pays it once and a pipelined group pays it
once for all its commands, as on a real network. (TCP connect and the
greeting are not delayed, which flatters the baseline by about one round
trip per message.) The proxy's delay is only as fine as the event loop's
timer, so the bench measures the round trip it really adds (NOOPs) and
prints it.

``--ledger sqlite|postgresql`` adds what ``relmail send`` does per e-mail:
the point-of-no-return mark (:class:`relmail.sending.marker.Marker`),
confirmed by the database before the final dot, and the server's answer
written as it arrives, on a throw-away ledger holding the messages as
claimed deliveries. The same run then also sends without them, so their
cost is a ratio of two measurements.

Usage::

    python bench/bench_smtp.py                 # 5,000 messages
    python bench/bench_smtp.py --ledger postgresql --pool 4   # with the ledger's mark, against without
    python bench/bench_smtp.py --messages 500 --json
    python bench/bench_smtp.py --security starttls --latency-ms 5 --pool 8   # a relay across a network
    python bench/bench_smtp.py --latency-ms 1 --pool 8 --baseline-threads 8   # the baseline at equal concurrency
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import smtplib
import socket
import subprocess
import sys
import time


def _sink(port: int, ready, stop, cert: str | None = None, key: str | None = None, latency: float = 0.0,
          pipelining: bool = True) -> None:
    """The aiosmtpd sink on ``port``; with ``latency`` (seconds) behind a delay proxy in this process."""
    from aiosmtpd.controller import Controller

    class Discard:
        """Accepts and discards. aiosmtpd answers pipelined commands in order but does not announce it."""

        async def handle_EHLO(self, server, session, envelope, hostname, responses):
            session.host_name = hostname
            if pipelining:
                responses.insert(-1, "250-PIPELINING")
            return responses

        async def handle_DATA(self, server, session, envelope):
            return "250 2.0.0 Ok: queued as X"

    kwargs = {}
    if cert:
        import ssl

        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        kwargs["tls_context"] = ctx
    controller = Controller(Discard(), hostname="127.0.0.1", port=_free_port() if latency else port, **kwargs)
    controller.start()
    if latency:
        _delay_proxy(port, controller.port, latency, ready, stop)
    else:
        ready.set()
        stop.wait()
    controller.stop()


def _delay_proxy(port: int, target: int, delay: float, ready, stop) -> None:
    """Passes bytes between client and sink, holding each from the client ``delay`` seconds."""
    import asyncio
    import threading
    from collections import deque

    loop = asyncio.new_event_loop()

    class ToClient(asyncio.Protocol):
        def __init__(self, client):
            self.client = client

        def data_received(self, data):
            self.client.transport.write(data)

        def connection_lost(self, exc):
            self.client.transport.close()

    class FromClient(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport, self.upstream, self.closed = transport, None, False
            self.held: deque[tuple[float, bytes]] = deque()
            transport.pause_reading()
            loop.create_task(self._open())

        async def _open(self):
            try:
                self.upstream, _ = await loop.create_connection(lambda: ToClient(self), "127.0.0.1", target)
            except OSError:
                self.transport.close()
                return
            self.transport.resume_reading()

        def data_received(self, data):
            self.held.append((loop.time() + delay, data))
            if len(self.held) == 1:
                loop.call_at(self.held[0][0], self._release)

        def _release(self):
            now = loop.time()
            while self.held and self.held[0][0] <= now:
                self.upstream.write(self.held.popleft()[1])
            if self.held:
                loop.call_at(self.held[0][0], self._release)
            elif self.closed:
                self.upstream.close()

        def connection_lost(self, exc):
            self.closed = True
            if not self.held and self.upstream is not None:
                self.upstream.close()

    server = loop.run_until_complete(loop.create_server(FromClient, "127.0.0.1", port, backlog=1024))
    threading.Thread(target=lambda: (stop.wait(), loop.call_soon_threadsafe(loop.stop)), daemon=True).start()
    ready.set()
    loop.run_forever()
    server.close()


def _smtp_sink_binary() -> str | None:
    return shutil.which("smtp-sink") or next((p for p in ("/usr/sbin/smtp-sink",) if os.path.exists(p)), None)


def _wait_for(port: int, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.recv(100)  # the greeting: really serving, not only listening
                return True
        except OSError:
            time.sleep(0.05)
    return False


def round_trip_ms(port: int, n: int = 50) -> float:
    """The mean time of one command and its reply (NOOP) on an open connection."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="bench.local") as s:
        s.noop()
        start = time.perf_counter()
        for _ in range(n):
            s.noop()
        return (time.perf_counter() - start) / n * 1000


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
    now = dt.datetime.now(dt.UTC)
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


def baseline(port: int, messages, tls: bool, threads: int = 1) -> float:
    import ssl
    from concurrent.futures import ThreadPoolExecutor

    ctx = ssl._create_unverified_context()  # the bench sink's self-signed certificate

    def one(m) -> None:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="bench.local") as s:
            if tls:
                s.starttls(context=ctx)
            s.sendmail(m.from_addr, [m.to], m.raw)

    start = time.perf_counter()
    if threads == 1:
        for m in messages:
            one(m)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, messages))
    return time.perf_counter() - start


def pooled(port: int, messages, pool: int, per_connection: int, tls: bool, marker=None) -> tuple[float, int]:
    from relmail.delivery import get_adapter

    config = {
        "host": "127.0.0.1", "port": port, "security": "starttls" if tls else "none", "helo": "bench.local",
        "verify_tls": False,
        "pool_size": pool, "messages_per_connection": per_connection,
    }
    adapter = get_adapter("smtp", config, {})
    if marker is not None:
        adapter.on_commit, adapter.on_answer = marker, marker.answer
    start = time.perf_counter()
    results = adapter.send(messages)
    elapsed = time.perf_counter() - start
    adapter.close()
    return elapsed, sum(r.accepted for r in results)


class Ledger:
    """A throw-away ledger whose deliveries are the bench's messages, claimed ('sending'), and the send loop's marker."""

    def __init__(self, backend: str, folder: str, n: int):
        from datetime import UTC, datetime

        from relmail.sending.marker import Marker
        from relmail.store.db import make_engine, upgrade

        self.admin = None
        if backend == "sqlite":
            url = f"sqlite:///{os.path.join(folder, 'ledger.db')}"
        else:
            from sqlalchemy import create_engine, text

            server = os.environ.get("RELMAIL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
            self.name = f"relmail_bench_smtp_{os.getpid()}"
            self.admin = create_engine(server, isolation_level="AUTOCOMMIT")
            with self.admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{self.name}"'))
            url = server.rsplit("/", 1)[0] + "/" + self.name
        self.engine = make_engine(url)
        upgrade(self.engine)
        self.n, self.now = n, datetime.now(UTC)
        self.marker = Marker(self.engine, lambda: self.now)

    def claimed(self, messages):
        """The messages re-keyed as claimed deliveries ``d<id>``, as the send loop hands them to the adapter."""
        from dataclasses import replace

        from relmail.store.models import Delivery

        D = Delivery.__table__
        with self.engine.begin() as conn:
            conn.execute(D.delete())
            conn.execute(D.insert(), [{"decision_id": i, "run_id": "bench", "customer_id": f"C{i}", "message_id": "tip",
                                       "status": "sending", "attempts": 1, "updated_at": self.now}
                                      for i in range(len(messages))])
            ids = [r[0] for r in conn.execute(D.select().with_only_columns(D.c.id).order_by(D.c.id))]
        return [replace(m, key=f"d{i}") for m, i in zip(messages, ids)]

    def answered(self) -> int:
        """How many deliveries hold the answer the marker wrote (the bench checks that each one did)."""
        from sqlalchemy import func, select

        from relmail.store.models import Delivery

        D = Delivery.__table__
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).where(D.c.answer.is_not(None))).scalar_one()

    def close(self) -> None:
        from sqlalchemy import text

        self.marker.close()
        self.engine.dispose()
        if self.admin is not None:
            with self.admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            self.admin.dispose()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=5000, help="messages through the pooled adapter")
    p.add_argument("--baseline-messages", type=int, default=None, help="messages for the baseline (default: same, at most 2000)")
    p.add_argument("--pool", type=int, default=4, help="concurrent connections")
    p.add_argument("--baseline-threads", type=int, default=1,
                   help="run the baseline in this many threads (default 1: the naive loop); = --pool compares at equal concurrency")
    p.add_argument("--per-connection", type=int, default=100, help="messages per connection before reconnecting")
    p.add_argument("--security", choices=("none", "starttls"), default="none", help="plain SMTP or STARTTLS for both methods")
    p.add_argument("--latency-ms", type=float, default=0.0,
                   help="hold every byte from the client this long, like a relay across a network (default 0: loopback)")
    p.add_argument("--sink", choices=("auto", "smtp-sink", "aiosmtpd"), default="auto",
                   help="auto: smtp-sink when installed and the run is plain SMTP, else aiosmtpd")
    p.add_argument("--no-pipelining", action="store_true", help="the sink does not offer PIPELINING (relmail in lock-step)")
    p.add_argument("--ledger", choices=("none", "sqlite", "postgresql"), default="none",
                   help="also send with the send ledger's point-of-no-return mark on this database (PostgreSQL: "
                        "$RELMAIL_TEST_POSTGRES_URL's server), against without it")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)

    import tempfile

    tls = args.security == "starttls"
    binary = _smtp_sink_binary()
    sink = args.sink
    if sink == "auto":
        sink = "smtp-sink" if binary and not tls else "aiosmtpd"
    if sink == "smtp-sink" and (not binary or tls):
        print("smtp-sink: " + ("does not speak STARTTLS" if tls else "not installed (Debian: apt-get install postfix)"),
              file=sys.stderr)
        return 2
    sink_port = port = _free_port()
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    children: list = []
    sink_proc = None
    try:
        if sink == "smtp-sink":
            # -u: as root it must drop privileges; -p: do not announce PIPELINING.
            cmd = [binary, *(["-u", "nobody"] if os.geteuid() == 0 else []), *(["-p"] if args.no_pipelining else []),
                   "-m", "1024", f"127.0.0.1:{sink_port}", "1024"]
            sink_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        else:
            tmp = tempfile.mkdtemp(prefix="relmail-bench-")
            cert, key = _certificate(tmp) if tls else (None, None)
            ready = ctx.Event()
            children.append(ctx.Process(target=_sink, args=(sink_port, ready, stop, cert, key, 0.0, not args.no_pipelining),
                                        daemon=True))
            children[-1].start()
        if not _wait_for(sink_port):
            print(f"SMTP sink ({sink}) did not start", file=sys.stderr)
            return 1
        if args.latency_ms > 0:
            port = _free_port()
            ready = ctx.Event()
            children.append(ctx.Process(target=_delay_proxy, args=(port, sink_port, args.latency_ms / 1000, ready, stop),
                                        daemon=True))
            children[-1].start()
            if not ready.wait(30):
                print("delay proxy did not start", file=sys.stderr)
                return 1
        rtt = round_trip_ms(port)
        messages = build(args.messages)
        n_base = args.baseline_messages or min(args.messages, 2000)
        base_s = baseline(port, messages[:n_base], tls, args.baseline_threads)
        pool_s, ok = pooled(port, messages, args.pool, args.per_connection, tls)
        marked_s = None
        if args.ledger != "none":
            ledger = Ledger(args.ledger, tempfile.mkdtemp(prefix="relmail-bench-ledger-"), len(messages))
            try:
                marked_s, marked_ok = pooled(port, ledger.claimed(messages), args.pool, args.per_connection, tls,
                                             marker=ledger.marker)
                if ledger.answered() != marked_ok:
                    print(f"only {ledger.answered()} of {marked_ok} answers were written", file=sys.stderr)
                    return 1
            finally:
                ledger.close()
            ok = min(ok, marked_ok)
    finally:
        stop.set()
        for child in children:
            child.join(10)
        if sink_proc is not None:
            sink_proc.terminate()
            sink_proc.wait(10)
    base_rate = n_base / base_s
    pool_rate = args.messages / pool_s
    out = {
        "messages": args.messages,
        "accepted": ok,
        "baseline_messages": n_base,
        "baseline_seconds": round(base_s, 3),
        "baseline_msgs_per_s": round(base_rate, 1),
        "baseline_threads": args.baseline_threads,
        "relmail_seconds": round(pool_s, 3),
        "relmail_msgs_per_s": round(pool_rate, 1),
        "sink": sink,
        "pipelining": not args.no_pipelining,
        "security": args.security,
        "latency_ms": args.latency_ms,
        "round_trip_ms": round(rtt, 3),
        "pool": args.pool,
        "per_connection": args.per_connection,
        "speedup": round(pool_rate / base_rate, 2),
        "ledger": args.ledger,
        "marked_seconds": round(marked_s, 3) if marked_s else None,
        "marked_msgs_per_s": round(args.messages / marked_s, 1) if marked_s else None,
        "marked_over_unmarked": round(pool_s / marked_s, 3) if marked_s else None,
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{'method':<44} {'messages':>9} {'seconds':>9} {'msgs/s':>9}")
        label = "smtplib, one connection per message" + (f", {args.baseline_threads} threads" if args.baseline_threads > 1 else "")
        print(f"{label:<44} {n_base:>9,} {base_s:>9.2f} {base_rate:>9,.0f}")
        label = f"relmail smtp, {args.pool} conns x {args.per_connection} msgs"
        print(f"{label:<44} {args.messages:>9,} {pool_s:>9.2f} {pool_rate:>9,.0f}")
        if marked_s:
            label = f"relmail smtp + {args.ledger} mark and answer"
            print(f"{label:<44} {args.messages:>9,} {marked_s:>9.2f} {args.messages / marked_s:>9,.0f}"
                  f"  ({out['marked_over_unmarked']:.2f}x the rate without them)")
        print(f"sink: {sink} ({'PIPELINING' if out['pipelining'] else 'no PIPELINING'}); security: {args.security}; "
              f"added latency: {args.latency_ms:g} ms, measured round trip {rtt:.2f} ms")
        print(f"speed-up: {out['speedup']}x  (accepted {ok:,}/{args.messages:,})")
    return 0 if ok == args.messages else 1


if __name__ == "__main__":
    sys.exit(main())
