"""A real server and a real browser for the dashboard tests and the dashboard benchmark.

`LiveServer` runs the wangge app with uvicorn in a thread on a free port; `launch` starts Debian's Chromium
through Playwright (never a downloaded browser); `Watch` records console errors and failed requests of a page.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from playwright.sync_api import Browser, Page, Playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def launch(pw: Playwright) -> Browser:
    return pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


@dataclass
class Watch:
    """Console errors, page errors and failed or erroring requests seen by a page."""

    errors: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> Watch:
        page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e} {e.stack}"))
        page.on("requestfailed", lambda r: None if _aborted_stream(r) else
                self.errors.append(f"failed: {r.url} {r.failure}"))
        page.on("response", lambda r: self.errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
        return self


def _aborted_stream(request: Any) -> bool:
    # Leaving a page aborts what it still had open (the never-ending live feed, Dash's WebSocket worker script):
    # that is the browser cancelling, not the server failing. Refused, reset or erroring requests still count.
    return "ERR_ABORTED" in str(request.failure)


def login(page: Page, base: str, username: str, password: str, next_: str = "/dashboard/wall") -> None:
    page.goto(f"{base}/dashboard/login?next={next_}")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}{next_}*")
