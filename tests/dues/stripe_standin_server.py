"""The Stripe stand-in (dues.stripe_standin) served over real HTTP by uvicorn in a
daemon thread, so the real `stripe` SDK in the app talks to it through a socket."""

from __future__ import annotations

import secrets
import socket
import threading
import time

import pytest
import uvicorn

from dues.stripe_standin import StripeStandin


class StandinServer:
    def __init__(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.sock = sock
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.standin = StripeStandin(webhook_secret="whsec_" + secrets.token_hex(16), public_base=self.url)
        self.standin.deliver_automatically = False
        config = uvicorn.Config(self.standin.app, lifespan="off", log_config=None, access_log=False,
                                server_header=False, timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True,
                                       name="stripe-standin")

    def start(self) -> StandinServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                pytest.fail("the Stripe stand-in did not start", pytrace=False)
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture
def stripe_server():
    server = StandinServer().start()
    yield server
    server.stop()
