"""The ``mnemoq5`` command line: pub, sub, reload, peers, peer, delete and demo.

Options follow mosquitto_pub and mosquitto_sub, so ``-h`` is the broker host and every
command takes ``--help`` instead. Errors print one line, ``mnemoq5: error: ...``, on
stderr. Exit status: 0 on success, 1 on an error, 2 on a usage error, 130 on SIGINT and
143 on SIGTERM. ``pub --serve``, ``delete --serve`` and ``peer`` exit with 0 on both
signals once they print their ready line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import json
import logging
import os
import signal
import ssl
import sys
import threading
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, BinaryIO

import mnemoq5

from . import _demo
from ._client import MnemoQ
from ._envelope import validate_user_properties
from ._errors import MnemoqError, ProtocolVersionError
from ._message import Message
from ._snapshot import Snapshot
from ._sqlite import SqliteStore
from ._stamp import Stamp, wall_clock_millis
from ._store import Entry, MemoryStore, Store
from ._topics import topic_matches, validate_topic_filter, validate_topic_name

__all__ = ["main", "build_parser", "client_settings", "build_tls_context", "CommandError"]

PROG = "mnemoq5"
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
# 128 + the signal number, the status a shell reports for a process ended by that signal.
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM

# The Message Expiry Interval is a Four Byte Integer of seconds (MQTT v5 3.3.2.3.3).
_MAX_EXPIRY = 0xFFFF_FFFF

# Lines read from stdin with ``pub -l`` that may wait for the publisher, so a fast
# producer cannot fill memory while the broker is slow.
_STDIN_QUEUE_LINES = 1000

logger = logging.getLogger(__name__)


class CommandError(Exception):
    """A failure that the command line reports as one line on stderr with an exit status."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


# -- argument parsing -------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Build the parser of ``mnemoq5`` and its subcommands.

    Each subcommand stores its handler, a function of the parsed namespace that returns
    the exit status, in ``args.handler``.
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        add_help=False,
        description="MQTT v5 publish and subscribe where late subscribers catch up from live peers.",
        epilog="Run 'mnemoq5 COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--help", action="help", help="show this help and exit")
    parser.add_argument("--version", action="version", version=f"%(prog)s {mnemoq5.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    connection = _connection_parser()
    _add_pub_parser(commands, connection)
    _add_sub_parser(commands, connection)
    _add_reload_parser(commands, connection)
    _add_peers_parser(commands, connection)
    _add_peer_parser(commands, connection)
    _add_delete_parser(commands, connection)
    # argparse shares the option objects of a parent parser between its children, so
    # the demo's other defaults need a connection parser of its own.
    _add_demo_parser(commands, _connection_parser(private_broker_default=True))
    return parser


def _command_parser(
    commands: Any, name: str, connection: argparse.ArgumentParser, summary: str, epilog: str | None = None
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        add_help=False,
        parents=[connection],
        help=summary,
        description=summary,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--help", action="help", help="show this help and exit")
    return parser


def _connection_parser(*, private_broker_default: bool = False) -> argparse.ArgumentParser:
    """Build the options that every command shares: broker, identity, TLS and output.

    With ``private_broker_default``, ``--host`` and ``--port`` default to None, which
    the demo reads as "start a private broker".
    """
    parser = argparse.ArgumentParser(add_help=False)
    broker = parser.add_argument_group("broker connection")
    if private_broker_default:
        broker.add_argument(
            "-h",
            "--host",
            help="broker host name or address (default 127.0.0.1 with -p); without -h and -p "
            "the demo starts a private Mosquitto on a free loopback port",
        )
        broker.add_argument("-p", "--port", type=_port, help="broker port (default 1883 with -h)")
    else:
        broker.add_argument(
            "-h", "--host", default="127.0.0.1", help="broker host name or address (default 127.0.0.1)"
        )
        broker.add_argument("-p", "--port", type=_port, default=1883, help="broker port (default 1883)")
    broker.add_argument(
        "-i", "--id", dest="client_id", metavar="CLIENT_ID", help="MQTT client id and peer identity (default random)"
    )
    broker.add_argument("-u", "--username", help="user name sent in CONNECT")
    broker.add_argument("-P", "--password", help="password sent in CONNECT")
    broker.add_argument(
        "-k", "--keepalive", type=_keepalive, default=60, metavar="SECONDS", help="MQTT keep alive (default 60)"
    )
    broker.add_argument(
        "--connect-timeout",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="time to wait for the broker's CONNACK (default 10)",
    )
    broker.add_argument(
        "--control-prefix",
        metavar="PREFIX",
        help="first topic level(s) of the catch-up control topics; peers see each other only "
        "when they use the same prefix (default mnemoq5)",
    )
    broker.add_argument(
        "--compat", action="store_true", help="speak MQTT 3.1.1 to brokers without MQTT v5"
    )

    tls = parser.add_argument_group("TLS (any of these options turns TLS on)")
    tls.add_argument("--tls", action="store_true", help="use TLS, trusting the system's CA certificates")
    tls.add_argument("--cafile", metavar="FILE", help="PEM file of the CA certificates to trust instead")
    tls.add_argument("--cert", metavar="FILE", help="PEM client certificate, with its key unless --key is given")
    tls.add_argument("--key", metavar="FILE", help="PEM private key of --cert")
    tls.add_argument(
        "--insecure",
        action="store_true",
        help="do not check that the server certificate names --host; the chain is still verified",
    )

    output = parser.add_argument_group("diagnostics")
    output.add_argument(
        "-v", "--verbose", action="count", default=0, help="log progress on stderr; twice for debug logs"
    )
    output.add_argument("--quiet", action="store_true", help="do not print status lines on stderr; errors still print")
    return parser


def _add_pub_parser(commands: Any, connection: argparse.ArgumentParser) -> None:
    parser = _command_parser(
        commands,
        "pub",
        connection,
        "Publish a message and remember it as the topic's last value.",
        epilog=(
            "The process remembers the last value of each topic it published and replies to\n"
            "catch-up requests from peers that subscribe later, but only while it runs.\n"
            "Without --serve it exits after publishing, and the value leaves with the\n"
            "process unless a durable store is given with --store FILE (a retained\n"
            "message, -r, stays on the broker in either case). With --serve it keeps\n"
            "replying to catch-up requests until SIGINT or SIGTERM, then exits with status 0.\n"
            "With -e the value expires after SECONDS: the broker and every peer that stores\n"
            "it drop it then, and catch-up no longer replays it."
        ),
    )
    parser.add_argument("-t", "--topic", required=True, help="topic name to publish to (no wildcards)")

    source = parser.add_argument_group("message (exactly one)").add_mutually_exclusive_group(required=True)
    source.add_argument("-m", "--message", help="the payload, encoded as UTF-8")
    source.add_argument(
        "-l",
        "--stdin-line",
        action="store_true",
        help="publish each line of stdin as one message, without its line ending; blank lines are skipped",
    )
    source.add_argument("-s", "--stdin-file", action="store_true", help="publish all of stdin as one message")
    source.add_argument("-f", "--file", metavar="FILE", help="publish the bytes of FILE as one message")
    source.add_argument("-n", "--null-message", action="store_true", help="publish an empty payload")

    _add_qos_option(parser, 0, "QoS 0, 1 or 2")
    parser.add_argument("-r", "--retain", action="store_true", help="ask the broker to retain the message")
    parser.add_argument(
        "-e",
        "--expiry",
        type=_expiry_seconds,
        metavar="SECONDS",
        help="lifetime of the value in seconds, sent as the MQTT v5 Message Expiry Interval "
        "(default: no expiry)",
    )
    parser.add_argument(
        "-D",
        "--user-property",
        nargs=2,
        action="append",
        default=[],
        metavar=("KEY", "VALUE"),
        help="add an MQTT v5 user property; repeat for more",
    )

    _add_serve_options(parser, "publishing")
    parser.set_defaults(handler=_run_async(run_pub))


def _add_qos_option(parser: argparse.ArgumentParser, default: int, summary: str) -> None:
    parser.add_argument(
        "-q", "--qos", type=int, choices=(0, 1, 2), default=default, help=f"{summary} (default {default})"
    )


def _add_filters_option(parser: argparse.ArgumentParser, summary: str) -> None:
    parser.add_argument(
        "-t", "--topic", dest="topics", action="append", required=True, metavar="FILTER", help=summary
    )


def _add_serve_options(parser: argparse.ArgumentParser, action: str) -> None:
    parser.add_argument(
        "--store",
        metavar="FILE",
        help="keep the last values in this SQLite file, which a later process with the same --store serves",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help=f"stay connected after {action} to reply to catch-up requests, until SIGINT/SIGTERM",
    )


def _add_sub_parser(commands: Any, connection: argparse.ArgumentParser) -> None:
    parser = _command_parser(
        commands,
        "sub",
        connection,
        "Subscribe to topic filters and print the messages received.",
        epilog=(
            "Once subscribed, a status line 'mnemoq5: subscribed to ...' goes to stderr.\n"
            "Each message is one stdout line of tab-separated fields: topic, payload,\n"
            "sender ('-' for a plain MQTT publisher) and 'live' or 'replayed'. A payload\n"
            "that is not UTF-8 text without control characters prints as 'base64:<data>'.\n"
            "A deletion has an empty payload and a fifth field, 'deleted'.\n"
            "With --json each line is a JSON object with the keys topic, payload,\n"
            "payload_encoding (only when the payload is base64 because it is not valid\n"
            "UTF-8), qos, retain, sender, replayed, deleted, expiry (the remaining lifetime\n"
            "in seconds when the message arrived, or null), user_properties ([key, value]\n"
            "pairs) and stamp ('<millis>:<counter>' or null).\n"
            "With -W and -C, the exit status is 1 when fewer than COUNT messages arrived."
        ),
    )
    _add_filters_option(parser, "topic filter to subscribe to; repeat for more")
    _add_qos_option(parser, 0, "QoS of the subscriptions")
    parser.add_argument(
        "--catch-up",
        action="store_true",
        help="also request the latest values of each filter from live peers",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per message")
    parser.add_argument("-C", "--count", type=_positive_int, metavar="COUNT", help="exit after COUNT messages")
    parser.add_argument(
        "-W", "--timeout", type=_positive_float, metavar="SECONDS", help="exit after waiting SECONDS for messages"
    )
    parser.set_defaults(handler=_run_async(run_sub))


def _add_reload_parser(commands: Any, connection: argparse.ArgumentParser) -> None:
    parser = _command_parser(
        commands,
        "reload",
        connection,
        "Ask the live peers for the latest values of a topic filter and print them.",
        epilog=(
            "Prints a table of topic, value, sender and age (from the value's stamp), then\n"
            "'N of M peers answered' and the ids of the peers that did not answer in time.\n"
            "A topic whose newest version is a deletion shows the value '(deleted)'.\n"
            "With --json, each record of \"values\" has the keys of 'sub --json' and age_ms,\n"
            "and a deletion has \"deleted\": true."
        ),
    )
    parser.add_argument("-t", "--topic", required=True, metavar="FILTER", help="topic filter of the values to fetch")
    parser.add_argument(
        "--timeout", type=_positive_float, default=2.0, metavar="SECONDS", help="time to wait for peers (default 2)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON document")
    parser.set_defaults(handler=_run_async(run_reload))


def _add_peers_parser(commands: Any, connection: argparse.ArgumentParser) -> None:
    parser = _command_parser(
        commands,
        "peers",
        connection,
        "List the live mnemoq5 peers and how long ago each started.",
        epilog="With --json the output is one array of {\"id\": ..., \"started_ms\": <Unix milliseconds>}.",
    )
    parser.add_argument("--json", action="store_true", help="print the peers as one JSON array")
    parser.set_defaults(handler=_run_async(run_peers))


def _add_peer_parser(commands: Any, connection: argparse.ArgumentParser) -> None:
    parser = _command_parser(
        commands,
        "peer",
        connection,
        "Run a standby peer that stores the values of topic filters and serves them to catch-up.",
        epilog=(
            "The peer subscribes to each -t filter with catch-up and stores the newest value\n"
            "of every topic it receives, deletions included, so values outlive the processes\n"
            "that published them. Once caught up it prints 'mnemoq5: standby for ...' on\n"
            "stderr, then replies to catch-up requests until SIGINT or SIGTERM and exits\n"
            "with status 0. Without --store the values are kept in memory and leave with the\n"
            "process. With --store FILE they are kept in an SQLite file and survive a restart\n"
            "of the peer with the same --store."
        ),
    )
    _add_filters_option(parser, "topic filter whose values to store; repeat for more")
    _add_qos_option(parser, 1, "QoS of the subscriptions")
    parser.add_argument(
        "--store", metavar="FILE", help="keep the values in this SQLite file (default: in memory)"
    )
    parser.set_defaults(handler=_run_async(run_peer))


def _add_delete_parser(commands: Any, connection: argparse.ArgumentParser) -> None:
    parser = _command_parser(
        commands,
        "delete",
        connection,
        "Delete a topic: publish a deletion that replaces its last value everywhere.",
        epilog=(
            "Live subscribers receive the deletion, and peers that store received values,\n"
            "such as 'mnemoq5 peer', keep it. The deletion is a stamped tombstone in this\n"
            "process's store, and while a process serves it, catch-up returns the deletion\n"
            "instead of an older value that another peer still holds. Without --serve the\n"
            "tombstone leaves with the process unless a durable store is given with\n"
            "--store FILE; a peer that holds the old value and did not receive the deletion\n"
            "then serves that value again. With --serve it keeps replying to catch-up\n"
            "requests until SIGINT or SIGTERM, then exits with status 0.\n"
            "The deletion also clears the broker's retained message only when this\n"
            "process's store holds the topic's last value as retained, as the --store FILE\n"
            "of the 'pub -r' that published it does."
        ),
    )
    parser.add_argument("-t", "--topic", required=True, help="topic name to delete (no wildcards)")
    _add_qos_option(parser, 1, "QoS of the deletion")
    _add_serve_options(parser, "deleting")
    parser.set_defaults(handler=_run_async(run_delete))


def _add_demo_parser(commands: Any, connection: argparse.ArgumentParser) -> None:
    parser = _command_parser(commands, "demo", connection, "Run the catch-up demonstration against a broker.")
    parser.set_defaults(handler=run_demo)


def _port(text: str) -> int:
    value = _parse_int(text, "port")
    if not 1 <= value <= 65_535:
        raise argparse.ArgumentTypeError(f"port {text!r} is invalid: it must be 1..65535")
    return value


def _keepalive(text: str) -> int:
    value = _parse_int(text, "keep alive")
    if not 0 <= value <= 65_535:
        raise argparse.ArgumentTypeError(f"keep alive {text!r} is invalid: it must be 0..65535 seconds")
    return value


def _positive_int(text: str) -> int:
    value = _parse_int(text, "count")
    if value < 1:
        raise argparse.ArgumentTypeError(f"count {text!r} is invalid: it must be 1 or more")
    return value


def _expiry_seconds(text: str) -> int:
    value = _parse_int(text, "expiry")
    if not 1 <= value <= _MAX_EXPIRY:
        raise argparse.ArgumentTypeError(f"expiry {text!r} is invalid: it must be 1..{_MAX_EXPIRY} seconds")
    return value


def _parse_int(text: str, quantity: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{quantity} {text!r} is not an integer") from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: it must be a finite number of seconds above 0")
    return value


# -- client settings --------------------------------------------------------


def client_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Return the MnemoQ keyword arguments that the shared connection options select."""
    settings: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "client_id": args.client_id,
        "keepalive": args.keepalive,
        "tls": build_tls_context(args),
        "username": args.username,
        "password": args.password,
        "connect_timeout": args.connect_timeout,
    }
    if args.control_prefix is not None:
        settings["control_prefix"] = args.control_prefix
    if args.compat:
        settings["compat"] = True
    return settings


def build_tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """Return the TLS context that --tls, --cafile, --cert, --key and --insecure select, or None."""
    if args.key and not args.cert:
        raise CommandError("--key needs --cert: give the client certificate that the key belongs to", EXIT_USAGE)
    if not (args.tls or args.cafile or args.cert or args.insecure):
        return None
    for option, path in (("--cafile", args.cafile), ("--cert", args.cert), ("--key", args.key)):
        if path is not None and not os.path.isfile(path):
            raise CommandError(f"{option} file {path!r} not found")
    try:
        context = ssl.create_default_context(cafile=args.cafile)
    except (ssl.SSLError, OSError) as error:
        raise CommandError(
            f"cannot load the CA certificates from --cafile {args.cafile!r}: {_ssl_reason(error)}; "
            "give a file of PEM certificates"
        ) from None
    if args.cert:
        try:
            context.load_cert_chain(args.cert, args.key)
        except (ssl.SSLError, OSError) as error:
            files = f"--cert {args.cert!r}" if args.key is None else f"--cert {args.cert!r} and --key {args.key!r}"
            raise CommandError(
                f"cannot load the client certificate from {files}: {_ssl_reason(error)}; "
                "give a PEM certificate and its PEM private key"
            ) from None
    if args.insecure:
        # Same meaning as mosquitto_pub --insecure: the host name check is off, but the
        # certificate chain must still lead to a trusted CA.
        context.check_hostname = False
    return context


def _ssl_reason(error: OSError) -> str:
    # ssl.SSLError subclasses OSError, and its reason is the OpenSSL error name.
    reason = getattr(error, "reason", None)
    text = str(reason or error.strerror or error)
    if "PEM lib" in text:
        # OpenSSL's generic failure of PEM_read_bio and SSL_CTX_check_private_key.
        return "the file is not in PEM format, or the key does not match the certificate"
    return text


def _status(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(f"{PROG}: {text}", file=sys.stderr, flush=True)


# -- pub --------------------------------------------------------------------


async def run_pub(args: argparse.Namespace) -> int:
    """Publish the message or stdin lines; with --serve, stay connected until SIGINT or SIGTERM."""
    topic = validate_topic_name(args.topic)
    properties = validate_user_properties([(key, value) for key, value in args.user_property])
    payload = None if args.stdin_line else _read_payload(args)
    async with _client_with_store(args) as client:
        if payload is None:
            count = await _publish_stdin_lines(client, topic, args, properties)
        else:
            await client.publish(
                topic,
                payload,
                qos=args.qos,
                retain=args.retain,
                user_properties=properties,
                expiry=args.expiry,
            )
            count = 1
        if args.serve:
            await _serve_catch_up(args, client, f"published {count} message(s) to {topic}")
    return EXIT_OK


@contextlib.asynccontextmanager
async def _client_with_store(args: argparse.Namespace) -> AsyncIterator[MnemoQ]:
    """Connect a client with the shared options and, with --store FILE, that SQLite store.

    The store is closed after the client disconnects.
    """
    settings = client_settings(args)
    store = SqliteStore(args.store) if args.store else None
    if store is not None:
        settings["store"] = store
    try:
        async with MnemoQ(**settings) as client:
            yield client
    finally:
        if store is not None:
            store.close()


async def _serve_catch_up(args: argparse.Namespace, client: MnemoQ, done: str) -> None:
    """Print the ready line and keep ``client`` connected until SIGINT or SIGTERM."""
    # The handlers are in place before the status line, so a signal sent as soon as
    # the line appears stops the server cleanly.
    with _stop_signals() as stop:
        _status(
            args,
            f"{done}; serving catch-up requests as {client.client_id} "
            f"on {args.host}:{args.port} until SIGINT or SIGTERM",
        )
        await stop.wait()


def _read_payload(args: argparse.Namespace) -> bytes:
    if args.message is not None:
        # os.fsencode restores the exact argv bytes, including ones that are not UTF-8.
        return os.fsencode(args.message)
    if args.null_message:
        return b""
    if args.file is not None:
        try:
            with open(args.file, "rb") as stream:
                return stream.read()
        except OSError as error:
            raise CommandError(f"cannot read message file {args.file!r}: {error.strerror or error}") from None
    try:
        return sys.stdin.buffer.read()
    except OSError as error:
        raise CommandError(f"cannot read the message from stdin: {error.strerror or error}") from None


async def _publish_stdin_lines(
    client: MnemoQ, topic: str, args: argparse.Namespace, properties: Iterable[tuple[str, str]]
) -> int:
    count = 0
    async for line in _read_lines(sys.stdin.buffer):
        if line == b"":
            continue
        await client.publish(
            topic, line, qos=args.qos, retain=args.retain, user_properties=properties, expiry=args.expiry
        )
        count += 1
    return count


async def _read_lines(stream: BinaryIO) -> AsyncIterator[bytes]:
    """Yield the lines of ``stream`` without ``\\n`` or ``\\r\\n``.

    A daemon thread does the blocking reads, so the event loop keeps serving the MQTT
    connection while stdin is idle, and a read still blocked at exit does not hold
    the process.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | OSError | None] = asyncio.Queue(maxsize=_STDIN_QUEUE_LINES)

    def deliver(item: bytes | OSError | None) -> bool:
        try:
            asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()
        except (RuntimeError, concurrent.futures.CancelledError):
            return False  # the event loop closed or cancelled the put, so no reader remains
        return True

    def read() -> None:
        end: OSError | None = None
        try:
            for line in stream:
                if not deliver(line):
                    return
        except OSError as error:
            end = error
        deliver(end)

    threading.Thread(target=read, name="mnemoq5-stdin", daemon=True).start()
    while True:
        item = await queue.get()
        if item is None:
            return
        if isinstance(item, OSError):
            raise CommandError(f"cannot read stdin: {item.strerror or item}")
        yield item.removesuffix(b"\n").removesuffix(b"\r")


@contextlib.contextmanager
def _stop_signals() -> Iterator[asyncio.Event]:
    """Return an event that SIGINT or SIGTERM sets while the block runs."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for number in signals:
        loop.add_signal_handler(number, stop.set)
    try:
        yield stop
    finally:
        for number in signals:
            loop.remove_signal_handler(number)


# -- delete and peer ----------------------------------------------------------


async def run_delete(args: argparse.Namespace) -> int:
    """Publish a deletion of -t; with --serve, stay connected until SIGINT or SIGTERM."""
    topic = validate_topic_name(args.topic)
    async with _client_with_store(args) as client:
        await client.delete(topic, qos=args.qos)
        if args.serve:
            await _serve_catch_up(args, client, f"deleted {topic}")
    return EXIT_OK


async def run_peer(args: argparse.Namespace) -> int:
    """Store the values under every -t filter and serve them to catch-up until SIGINT or SIGTERM."""
    filters = [validate_topic_filter(topic_filter) for topic_filter in args.topics]
    settings = client_settings(args)
    store: Store = SqliteStore(args.store) if args.store else MemoryStore()
    try:
        async with MnemoQ(**settings, store=store, remember="received") as client:
            # MnemoQ queues every received message for messages(), so the peer drains
            # that queue to keep its memory bounded.
            discard = asyncio.create_task(_discard_messages(client), name="mnemoq5-peer-discard")
            try:
                for topic_filter in filters:
                    await client.subscribe(topic_filter, qos=args.qos, catch_up=True)
                with _stop_signals() as stop:
                    stored = _count_values(client.store.values())
                    _status(
                        args,
                        f"standby for {', '.join(filters)} on {args.host}:{args.port}, "
                        f"{stored} value{'' if stored == 1 else 's'} stored",
                    )
                    await stop.wait()
            finally:
                discard.cancel()
                await asyncio.gather(discard, return_exceptions=True)
    finally:
        store.close()
    return EXIT_OK


async def _discard_messages(client: MnemoQ) -> None:
    async for message in client.messages():
        kind = "deletion" if message.deleted else "value"
        logger.debug("stored the %s of %s from %s", kind, message.topic, message.sender)


def _count_values(entries: Iterable[Entry]) -> int:
    return sum(1 for entry in entries if not entry.deleted)


# -- sub --------------------------------------------------------------------


async def run_sub(args: argparse.Namespace) -> int:
    """Subscribe to every -t filter and print messages until -C, -W or SIGINT."""
    filters = [validate_topic_filter(topic_filter) for topic_filter in args.topics]
    write = _write_json_line if args.json else _write_text_line

    async with MnemoQ(**client_settings(args)) as client:
        for topic_filter in filters:
            await client.subscribe(topic_filter, qos=args.qos, catch_up=args.catch_up)
        _status(args, f"subscribed to {', '.join(filters)} on {args.host}:{args.port}")
        received = await _print_messages(client, write, args.count, args.timeout)

    if args.count is not None and received < args.count:
        raise CommandError(f"timed out after {args.timeout} s with {received} of {args.count} messages received")
    return EXIT_OK


async def _print_messages(
    client: MnemoQ, write: Callable[[Message], None], count: int | None, timeout: float | None
) -> int:
    """Write messages until ``count`` arrived or ``timeout`` seconds passed; return how many arrived."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    iterator = client.messages().__aiter__()
    received = 0
    while count is None or received < count:
        remaining = None if deadline is None else deadline - loop.time()
        if remaining is not None and remaining <= 0:
            break
        try:
            message = await asyncio.wait_for(iterator.__anext__(), remaining)
        except (asyncio.TimeoutError, StopAsyncIteration):
            break
        write(message)
        received += 1
    return received


def _write_text_line(message: Message) -> None:
    fields = [
        message.topic,
        _printable_payload(message.payload),
        message.sender or "-",
        "replayed" if message.replayed else "live",
    ]
    if message.deleted:
        fields.append("deleted")
    print("\t".join(fields), flush=True)


def _write_json_line(message: Message) -> None:
    print(json.dumps(message_record(message)), flush=True)


def message_record(message: Message) -> dict[str, Any]:
    """Return ``message`` as a JSON-ready dict, the format of ``sub --json``."""
    record: dict[str, Any] = {"topic": message.topic}
    text = _utf8_text(message.payload)
    if text is None:
        record["payload"] = base64.b64encode(message.payload).decode("ascii")
        record["payload_encoding"] = "base64"
    else:
        record["payload"] = text
    record["qos"] = message.qos
    record["retain"] = message.retain
    record["sender"] = message.sender
    record["replayed"] = message.replayed
    record["deleted"] = message.deleted
    record["expiry"] = message.expiry
    record["user_properties"] = [[key, value] for key, value in message.user_properties]
    record["stamp"] = _stamp_text(message.stamp)
    return record


def _utf8_text(payload: bytes) -> str | None:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _printable_payload(payload: bytes) -> str:
    """Return the payload as text for one output line, or as ``base64:<data>``.

    Control characters (tab, newline and the like) would break the line format, so a
    payload with any of them is printed as base64 like a payload that is not UTF-8.
    """
    text = _utf8_text(payload)
    if text is not None and not any(unicodedata.category(character) == "Cc" for character in text):
        return text
    return "base64:" + base64.b64encode(payload).decode("ascii")


def _stamp_text(stamp: Stamp | None) -> str | None:
    return None if stamp is None else stamp.to_text()


# -- reload and peers -------------------------------------------------------


async def run_reload(args: argparse.Namespace) -> int:
    """Fetch the latest values of -t from the live peers and print them."""
    topic_filter = validate_topic_filter(args.topic)
    # A Snapshot leaves deleted topics out, so the client stores what the peers
    # replied, and the newest tombstones come from its store.
    async with MnemoQ(**client_settings(args), remember="received") as client:
        snapshot = await client.reload(topic_filter, timeout=args.timeout)
        deletions = [
            _deletion_message(entry)
            for entry in client.store.values()
            if entry.deleted and topic_matches(topic_filter, entry.topic)
        ]
    report = reload_report(snapshot, wall_clock_millis(), deletions)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_reload_table(report)
    return EXIT_OK


def _deletion_message(entry: Entry) -> Message:
    return Message(
        topic=entry.topic,
        payload=b"",
        qos=entry.qos,
        retain=entry.retain,
        sender=entry.stamp.writer,
        replayed=True,
        stamp=entry.stamp,
        deleted=True,
    )


def reload_report(snapshot: Snapshot, now_millis: int, deletions: Iterable[Message] = ()) -> dict[str, Any]:
    """Return ``snapshot`` and ``deletions`` as a JSON-ready dict, the format of ``reload --json``.

    ``deletions`` are the deleted topics under the filter, which a Snapshot leaves out.
    Their records have ``"deleted": true`` and sort among the values by topic.
    """
    messages = {message.topic: message for message in deletions if message.topic not in snapshot}
    messages.update(snapshot)
    values = []
    for topic in sorted(messages):
        message = messages[topic]
        record = message_record(message)
        record["age_ms"] = _age_millis(message.stamp, now_millis)
        values.append(record)
    return {
        "filter": snapshot.topic_filter,
        "complete": snapshot.complete,
        "peers_answered": len(snapshot.answered),
        "peers_asked": len(snapshot.answered | snapshot.missing),
        "missing": sorted(snapshot.missing),
        "values": values,
    }


def _print_reload_table(report: Mapping[str, Any]) -> None:
    rows = [
        (
            value["topic"],
            "(deleted)" if value.get("deleted") else _printable_payload(_record_payload(value)),
            value["sender"] or "-",
            _format_age(value["age_ms"]),
        )
        for value in report["values"]
    ]
    if rows:
        _print_table(("TOPIC", "VALUE", "SENDER", "AGE"), rows)
    else:
        print(f"no values match {report['filter']}")
    print(f"{report['peers_answered']} of {report['peers_asked']} peers answered")
    if report["missing"]:
        print("missing: " + ", ".join(report["missing"]))


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _record_payload(record: Mapping[str, Any]) -> bytes:
    if record.get("payload_encoding") == "base64":
        return base64.b64decode(record["payload"])
    return str(record["payload"]).encode("utf-8")


def _age_millis(stamp: Stamp | None, now_millis: int) -> int | None:
    # A clock ahead of this machine's can give a stamp from the future, shown as age 0.
    return None if stamp is None else max(0, now_millis - stamp.millis)


def _format_age(millis: int | None) -> str:
    """Format an age in milliseconds for people: ``850 ms``, ``12.3 s``, ``4 min 5 s``, ``2 h 3 min``."""
    if millis is None:
        return "-"
    if millis < 1_000:
        return f"{millis} ms"
    if millis < 60_000:
        return f"{millis / 1_000:.1f} s"
    seconds = millis // 1_000
    if seconds < 3_600:
        return f"{seconds // 60} min {seconds % 60} s"
    if seconds < 86_400:
        return f"{seconds // 3_600} h {seconds % 3_600 // 60} min"
    return f"{seconds // 86_400} d {seconds % 86_400 // 3_600} h"


async def run_peers(args: argparse.Namespace) -> int:
    """Print the live peers with the time since each started, as a table or JSON."""
    async with MnemoQ(**client_settings(args)) as client:
        # The client has read every retained presence message once connect() returns.
        peers = client.peers()
    now_millis = wall_clock_millis()
    if args.json:
        print(json.dumps([{"id": peer, "started_ms": peers[peer]} for peer in sorted(peers)]))
    elif peers:
        rows = [(peer, _format_age(max(0, now_millis - peers[peer]))) for peer in sorted(peers)]
        _print_table(("PEER", "UPTIME"), rows)
    else:
        _status(args, f"no live peers on {args.host}:{args.port}")
    return EXIT_OK


# -- demo -------------------------------------------------------------------


def run_demo(args: argparse.Namespace) -> int:
    """Run the catch-up demo; ``--host`` and ``--port`` of None start a private broker."""
    return _demo.main(args)


# -- main -------------------------------------------------------------------


def _run_async(command: Callable[[argparse.Namespace], Awaitable[int]]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return asyncio.run(_stop_on_sigterm(command, args))

    return run


async def _stop_on_sigterm(command: Callable[[argparse.Namespace], Awaitable[int]], args: argparse.Namespace) -> int:
    """Run ``command``; SIGTERM cancels it, so the client still disconnects cleanly."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    terminated = False

    def terminate() -> None:
        nonlocal terminated
        terminated = True
        task.cancel()

    loop.add_signal_handler(signal.SIGTERM, terminate)
    try:
        return await command(args)
    except asyncio.CancelledError:
        if terminated:
            return EXIT_TERMINATED
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _configure_logging(verbosity: int) -> None:
    if verbosity == 0:
        level = logging.WARNING
    elif verbosity == 1:
        level = logging.INFO
    else:
        level = logging.DEBUG
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # gmqtt 0.8 logs connections and subscriptions at INFO, which only -vv shows.
    logging.getLogger("gmqtt").setLevel(level if verbosity >= 2 else logging.WARNING)


def _print_error(text: str) -> None:
    print(f"{PROG}: error: {text}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``) and return the exit status.

    argparse exits with status 2 itself on a usage error or with 0 after --help.
    """
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return int(args.handler(args))
    except CommandError as error:
        _print_error(str(error))
        return error.status
    except ProtocolVersionError as error:
        # The hint fits a broker without MQTT v5, not one that rejects MQTT 3.1.1.
        hint = "" if args.compat else " (on the command line, pass --compat)"
        _print_error(f"{error}{hint}")
        return EXIT_ERROR
    except MnemoqError as error:
        _print_error(str(error))
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of stdout has gone, as with '| head -1'. Point stdout at /dev/null
        # so the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
