"""Faults while a container is watched: the connection to the daemon cut mid-stream.

The real ContainerTrigger, the real daemon over mutual TLS, and a TCP proxy on 127.0.0.1
between them that the test cuts: every connection dropped and new ones refused for a few
seconds, while the container keeps printing numbered lines.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest
import structlog
import structlog.testing
from conftest import BUSYBOX_IMAGE, ENGINE_KIND, Daemon

from remote_docker.lifecycle.watch import REST_TAIL_ENTRIES
from remote_docker.logs.follower import MAX_LINE_BYTES
from remote_docker.triggers import ContainerTrigger


class CuttableProxy:
    """Forwards 127.0.0.1:<port> to the daemon; ``cut(seconds)`` drops everything and refuses for a while."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.cut_until = 0.0
        self.cuts = 0
        self.accepted = 0
        self.held_below = 0  # connections accepted before hold() forward nothing more to the client
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if time.monotonic() < self.cut_until:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}
        index, self.accepted = self.accepted, self.accepted + 1

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    while sink is writer and index < self.held_below and not sink.is_closing():
                        await asyncio.sleep(0.01)
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def hold(self) -> None:
        """The daemon's bytes on every open connection stop reaching the client (until a cut drops them)."""
        self.held_below = self.accepted

    def cut(self, seconds: float) -> None:
        self.cuts += 1
        self.cut_until = max(self.cut_until, time.monotonic() + seconds)
        for writer in list(self._writers):
            writer.transport.abort()

    async def close(self) -> None:
        self._server.close()


class Lines:
    """The trigger's log events (Airflow 3 logs through structlog), as (level, text)."""

    def __init__(self, entries: list[dict]) -> None:
        self.entries = entries

    @property
    def records(self) -> list[tuple[str, str]]:
        """A line each: a backlog read at once after a cut is a flood, and floods share records."""
        return [(e.get("log_level", "").upper(), line) for e in self.entries for line in e.get("event", "").split("\n")]


@pytest.fixture
def captured() -> Lines:
    with structlog.testing.capture_logs() as entries:
        yield Lines(entries)


def watch_through_proxy(daemon: Daemon, script: str, cuts: list[tuple[float, float]], daemon_lost_timeout: float) -> dict:
    """Start a container running ``script`` and watch it with the real trigger through a proxy,
    which is cut at each ``(after seconds, for seconds)``; returns the trigger's event."""
    client = daemon.client()
    body = {"Image": BUSYBOX_IMAGE, "Cmd": ["sh", "-c", script], "HostConfig": {"NetworkMode": "none"}}
    container_id = client.api.create_container_from_config(body)["Id"]

    async def scenario() -> dict:
        proxy = CuttableProxy(daemon.port)
        await proxy.start()
        hook_params = daemon.hook_params(url=f"tcp://127.0.0.1:{proxy.port}")
        trigger = ContainerTrigger(container_id, None, hook_params=hook_params, daemon_lost_timeout=daemon_lost_timeout)
        client.api.start(container_id)
        for after, seconds in cuts:
            asyncio.get_running_loop().call_later(after, proxy.cut, seconds)
        try:
            async for event in trigger.run():
                return event.payload
        finally:
            await proxy.close()
        raise AssertionError("no event")

    try:
        return asyncio.run(scenario())
    finally:
        client.api.remove_container(container_id, force=True)
        client.close()


def test_stream_resumes_after_the_connection_is_cut(daemon: Daemon, captured: Lines) -> None:
    lines = 120
    script = f"i=1; while [ $i -le {lines} ]; do echo line-$i; [ $((i % 10)) = 0 ] && echo err-$i >&2; sleep 0.05; i=$((i+1)); done"
    # mid-stream: the container keeps writing while we can't read; then once more right after reconnecting
    event = watch_through_proxy(daemon, script, cuts=[(1.5, 3.0), (5.5, 0.5)], daemon_lost_timeout=30)
    stdout = [text for level, text in captured.records if level == "INFO"]
    stderr = [text for level, text in captured.records if level == "WARNING" and text.startswith("err-")]
    assert event["status"] == "exited" and event["exit_code"] == 0
    assert stdout == [f"line-{i}" for i in range(1, lines + 1)], "every line once, in order, across two cuts"
    assert stderr == [f"err-{i}" for i in range(10, lines + 1, 10)]
    lost = [text for level, text in captured.records if text.startswith("Lost the daemon")]
    assert lost, "the cut was noticed and reported"


@pytest.mark.parametrize("missed", [10, REST_TAIL_ENTRIES + 300])
def test_lines_the_follow_stream_never_delivered_are_read_back_once_and_in_order(
        daemon: Daemon, captured: Lines, missed: int) -> None:
    """The end of a log the follow stream lost (dockerd under load ends streams early): a few lines come
    back from a read of the log's tail, more than that tail holds from a read since the last line seen."""
    first = 400
    script = (f"i=1; while [ $i -le {first} ]; do echo line-$i; i=$((i+1)); done; sleep 2; "
              f"while [ $i -le {first + missed} ]; do echo line-$i; i=$((i+1)); done")
    client = daemon.client()
    body = {"Image": BUSYBOX_IMAGE, "Cmd": ["sh", "-c", script], "HostConfig": {"NetworkMode": "none"}}
    container_id = client.api.create_container_from_config(body)["Id"]

    def logged() -> list[str]:
        return [text for level, text in captured.records if level == "INFO" and text.startswith("line-")]

    async def scenario() -> dict:
        proxy = CuttableProxy(daemon.port)
        await proxy.start()
        trigger = ContainerTrigger(container_id, None, hook_params=daemon.hook_params(url=f"tcp://127.0.0.1:{proxy.port}"))
        client.api.start(container_id)
        watching = asyncio.ensure_future(anext(trigger.run()))
        try:
            for _ in range(400):
                if len(logged()) >= first:
                    break
                await asyncio.sleep(0.025)
            proxy.hold()  # the rest is written, the container exits, and none of it reaches the trigger
            await asyncio.to_thread(client.api.wait, container_id, timeout=60)
            assert len(logged()) == first, "the stream was held before the container's last lines"
            proxy.cut(0)  # the stream ends without them
            return (await asyncio.wait_for(watching, 60)).payload
        finally:
            watching.cancel()
            await proxy.close()

    try:
        event = asyncio.run(scenario())
    finally:
        client.api.remove_container(container_id, force=True)
        client.close()
    assert event["status"] == "exited" and event["exit_code"] == 0
    assert logged() == [f"line-{i}" for i in range(1, first + missed + 1)], "every line once, in order"
    assert event["last_stdout_line"] == f"line-{first + missed}"


@pytest.mark.timeout(120)
def test_daemon_gone_for_good_gives_one_clear_error(daemon: Daemon, captured: Lines) -> None:
    event = watch_through_proxy(daemon, "echo up; sleep 30", cuts=[(1.0, 3600)], daemon_lost_timeout=3)
    assert event["status"] == "error"
    assert " https://127.0.0.1:" in event["message"], "names the daemon"
    assert event["message"].endswith("(gave up after 3s)")
    assert "\n" not in event["message"]


class HashingLog:
    """A structlog processor that keeps only what a 1 GB line test needs: a digest, sizes, counts."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.pieces = 0
        self.largest = 0
        self.others: list[tuple[str, str]] = []
        self.replayed = False  # the engine's stream skipped part of the log: what counts is the replay that follows

    def __call__(self, _logger, method: str, event: dict) -> dict:
        text = event.get("event", "")
        if event.get("replay") and not self.replayed:
            self.__init__()
            self.replayed = True
        if method == "info" and len(text) > 1000:
            self.digest.update(text.encode())
            self.pieces += 1
            self.largest = max(self.largest, len(text.encode()))
        else:
            self.others.append((method, text))
        raise structlog.DropEvent


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_one_gigabyte_single_line_is_logged_in_pieces_and_nothing_is_lost(daemon: Daemon) -> None:
    size = 1 << 30
    pattern = b"0123456789abcdef"
    script = f"yes {pattern.decode()} | tr -d '\\n' | head -c {size}; echo; echo after-the-long-line"
    expected = hashlib.sha256()
    block = pattern * (1 << 16)  # 1 MiB
    for _ in range(size // len(block)):
        expected.update(block)
    client = daemon.client()
    container_id = client.api.create_container_from_config(
        {"Image": BUSYBOX_IMAGE, "Cmd": ["sh", "-c", script], "HostConfig": {"NetworkMode": "none"}})["Id"]
    hooked = HashingLog()
    hook_params = daemon.hook_params()

    async def watch() -> dict:
        async for event in ContainerTrigger(container_id, None, hook_params=hook_params).run():
            return event.payload
        raise AssertionError("no event")

    structlog.configure(processors=[hooked])
    try:
        client.api.start(container_id)
        event = asyncio.run(watch())
    finally:
        structlog.reset_defaults()
        client.api.remove_container(container_id, force=True)
        client.close()
    assert event["status"] == "exited" and event["exit_code"] == 0
    # Podman's follow stream can skip part of a log written this fast; then the whole log is logged again
    assert not hooked.replayed or ENGINE_KIND == "podman", "Docker's follow stream skips nothing"
    assert hooked.digest.hexdigest() == expected.hexdigest(), "the pieces put together are the line, byte for byte"
    assert hooked.pieces == size // MAX_LINE_BYTES and hooked.largest == MAX_LINE_BYTES
    notices = [text for method, text in hooked.others if "longer than" in text]
    assert notices == ["The container wrote a stdout line longer than 4,194,304 bytes: it is logged in pieces of that size."]
    assert ("info", "after-the-long-line") in hooked.others
    assert event["last_stdout_line"] == "after-the-long-line" and event["lines"]["stdout"] == 2
