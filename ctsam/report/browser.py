"""Open an HTML file in headless Chromium and say what a reader would see go wrong.

Drives the browser over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON messages,
NUL-terminated, on file descriptors 3 and 4), with the standard library only: no Playwright, no
browser download. :func:`inspect_page` loads the page, waits for its load event, and returns the
console errors, uncaught exceptions, failed loads and broken images, plus a PNG screenshot.

Used by the report's browser test (tests/report/test_report_browser.py) and by
docs/make_screenshot.py (docs/report.png). Needs a Chromium binary (Debian: ``apt-get install
chromium``); :func:`find_chromium` returns None when there is none.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--remote-debugging-pipe",
)

_IMAGES_JS = """JSON.stringify(Array.from(document.images).map(i => ({
  alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight})))"""


@dataclass
class PageReport:
    """What loading the page produced."""

    title: str = ""
    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    log_errors: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    screenshot_png: bytes = b""

    @property
    def broken_images(self) -> list[dict]:
        return [i for i in self.images if not i["complete"] or not i["width"] or not i["height"]]

    @property
    def problems(self) -> list[str]:
        return (
            [f"console error: {m}" for m in self.console_errors]
            + [f"exception: {m}" for m in self.exceptions]
            + [f"log error: {m}" for m in self.log_errors]
            + [f"broken image: {i['alt'] or '(no alt)'}" for i in self.broken_images]
        )


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary, or None."""
    env = os.environ.get("CTSAM_CHROMIUM")
    for c in ((env,) if env else ()) + CHROMIUM_CANDIDATES:
        path = c if os.path.isabs(c) and os.access(c, os.X_OK) else shutil.which(c)
        if path:
            return path
    return None


class _Pipe:
    def __init__(self, proc: subprocess.Popen, to_browser: int, from_browser: int) -> None:
        self.proc, self.w, self.r = proc, to_browser, from_browser
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []

    def send(
        self, method: str, params: dict | None = None, session: str | None = None, timeout_s: float = 60.0
    ) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            m = self._read(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method: str, timeout_s: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout_s
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        while True:
            m = self._read(deadline)
            if m.get("method") == method:
                return m
            self.events.append(m)

    def _read(self, deadline: float) -> dict:
        import select

        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from the browser")
            ready, _, _ = select.select([self.r], [], [], left)
            if ready:
                chunk = os.read(self.r, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"the browser closed its pipe (exit code {self.proc.poll()})")
                self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)


def inspect_page(
    path: str | os.PathLike[str],
    *,
    chromium: str | None = None,
    width: int = 1400,
    height: int = 1000,
    full_page: bool = False,
    timeout_s: float = 60.0,
) -> PageReport:
    """Load ``path`` (a local HTML file) in headless Chromium; return its :class:`PageReport`."""
    binary = chromium or find_chromium()
    if binary is None:
        raise FileNotFoundError("no Chromium found (Debian: apt-get install chromium; or set CTSAM_CHROMIUM)")
    url = Path(path).resolve().as_uri()
    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()
    with tempfile.TemporaryDirectory(prefix="ctsam-chromium-") as profile:
        # bash (not sh: dash refuses descriptors above 9) puts the pipe ends on the fds 3 and 4 Chromium expects
        cmd = [
            shutil.which("bash") or "bash",
            "-c",
            f'exec "$0" "$@" 3<&{to_r} 4>&{from_w}',
            binary,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        stderr = open(Path(profile) / "chromium.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            cmd, pass_fds=(to_r, from_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
        )
        os.close(to_r)
        os.close(from_w)
        pipe = _Pipe(proc, to_w, from_r)
        report = PageReport()
        try:
            try:
                target = pipe.send("Target.getTargets", timeout_s=timeout_s)
            except (OSError, RuntimeError, TimeoutError) as err:
                stderr.flush()
                tail = (Path(profile) / "chromium.log").read_text(errors="replace")[-1500:]
                raise RuntimeError(f"Chromium did not answer ({err}); its log ends:\n{tail}") from err
            target = pipe.send("Target.createTarget", {"url": "about:blank"}, timeout_s=timeout_s)["targetId"]
            session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                pipe.send(f"{domain}.enable", session=session)
            pipe.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                session=session,
            )
            nav = pipe.send("Page.navigate", {"url": url}, session=session)
            if nav.get("errorText"):
                report.log_errors.append(f"navigation failed: {nav['errorText']}")
            pipe.wait_event("Page.loadEventFired", timeout_s=timeout_s)
            value = pipe.send("Runtime.evaluate", {"expression": _IMAGES_JS, "returnByValue": True}, session=session)
            report.images = json.loads(value["result"]["value"])
            report.title = pipe.send(
                "Runtime.evaluate", {"expression": "document.title", "returnByValue": True}, session=session
            )["result"]["value"]
            shot: dict = {"format": "png"}
            if full_page:
                metrics = pipe.send("Page.getLayoutMetrics", session=session)
                size = metrics.get("cssContentSize") or metrics["contentSize"]
                shot.update(
                    captureBeyondViewport=True,
                    clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
                )
            report.screenshot_png = base64.b64decode(pipe.send("Page.captureScreenshot", shot, session=session)["data"])
            for e in pipe.events:
                p = e.get("params", {})
                if e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                    report.console_errors.append(
                        " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
                    )
                elif e.get("method") == "Runtime.exceptionThrown":
                    d = p.get("exceptionDetails", {})
                    report.exceptions.append(str((d.get("exception") or {}).get("description") or d.get("text")))
                elif e.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                    entry = p["entry"]
                    report.log_errors.append(
                        f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip()
                    )
            try:
                pipe.send("Browser.close", timeout_s=10)
            except (RuntimeError, TimeoutError):
                pass
        finally:
            stderr.close()
            os.close(to_w)
            os.close(from_r)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return report
