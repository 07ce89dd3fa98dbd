"""Pytest fixtures around the scripted chat server of `pyvision_magic.testing`.

The server, its script steps and the notes on what the ``openai`` client makes
of each response live in `pyvision_magic.testing`; this module only adds the
fixtures, and re-exports the names tests import from here.

``chat_server`` yields a started server with an empty script;
``make_chat_server(script=None, **options)`` makes started servers with
options (``models``, ``api_key``, ``reject_stop``, ``reject_params``,
``default``, ``chunk_chars``).  Both stop their servers after the test and fail it if a
server recorded an unexpected exception in ``errors``.  Import them into
``tests/conftest.py`` with ``from chat_server import chat_server,
make_chat_server`` (pytest puts ``tests/`` on ``sys.path`` while it has no
``__init__.py``)::

    def test_x(chat_server):
        chat_server.script = ["first reply", Reply("second", delay=0.1)]
        with OpenAI(base_url=chat_server.base_url, api_key="k") as client:
            ...
        assert chat_server.last_messages()[-1]["role"] == "user"
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pyvision_magic.testing import (
    DEFAULT_MODEL,
    ChatServer,
    CutStream,
    Drip,
    Endless,
    HTTPError,
    RecordedRequest,
    Reply,
    Step,
    ToolCall,
)

__all__ = [
    "DEFAULT_MODEL",
    "ChatServer",
    "CutStream",
    "Drip",
    "Endless",
    "HTTPError",
    "RecordedRequest",
    "Reply",
    "Step",
    "ToolCall",
    "chat_server",
    "make_chat_server",
]


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    """A started `ChatServer` with an empty script; set ``chat_server.script``."""
    with ChatServer() as server:
        yield server
    assert not server.errors, f"the chat server failed while serving: {server.errors!r}"


@pytest.fixture
def make_chat_server() -> Iterator[Callable[..., ChatServer]]:
    """A factory: ``make_chat_server(script, **options)`` returns a started server.

    Every server it made is stopped after the test.
    """
    servers: list[ChatServer] = []

    def make(script: list[Step] | None = None, **options: Any) -> ChatServer:
        server = ChatServer(script, **options).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
    errors = [exc for server in servers for exc in server.errors]
    assert not errors, f"a chat server failed while serving: {errors!r}"
