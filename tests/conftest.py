"""Shared fixtures: the bundled encoder (loaded once) and small generated image folders."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright import sync_api

from probe_core.encoders import DEFAULT_ENCODER, load_encoder
from probe_core.path_decisions import DECISIONS_DIR_ENV as PATHS_DIR_ENV

REPO = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO / "assets" / "demo"

# Execution-path decisions of this test session (and its subprocesses) stay out of the user's
# cache: the first load of an encoder calibrates, later loads and processes read it back.
if not os.environ.get(PATHS_DIR_ENV):
    os.environ[PATHS_DIR_ENV] = tempfile.mkdtemp(prefix="probe-paths-")
    atexit.register(shutil.rmtree, os.environ[PATHS_DIR_ENV], ignore_errors=True)


@pytest.fixture(scope="session")
def encoder():
    """The bundled offline encoder on the CPU, shared by every test."""
    return load_encoder(DEFAULT_ENCODER, device="cpu")


@pytest.fixture
def rows_per_forward(encoder, monkeypatch) -> list[int]:
    """The rows of each forward pass the shared encoder runs during the test, in order."""
    rows: list[int] = []
    encode = type(encoder).encode

    def recording(self, batch):
        rows.append(len(batch))
        return encode(self, batch)

    monkeypatch.setattr(type(encoder), "encode", recording)
    return rows


def pattern_image(class_index: int, variant: int, size: int = 48) -> Image.Image:
    """A small RGB image whose colour and stripes depend on its class, varied per image."""
    rng = np.random.default_rng(1000 * class_index + variant)
    palette = [(220, 40, 40), (40, 160, 60), (40, 70, 220), (230, 200, 30), (150, 50, 180)]
    base = np.array(palette[class_index % len(palette)], dtype=float)
    pixels = np.tile(base, (size, size, 1))
    stripes = (np.arange(size) // (3 + class_index)) % 2 == 0
    pixels[stripes, :, :] *= 0.55
    pixels += rng.normal(0, 18, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_image_folder(root: Path, counts: dict[str, int], fmt: str = "PNG") -> Path:
    """Write ``counts[class]`` pattern images into ``root/<class>/``."""
    suffix = {"PNG": "png", "JPEG": "jpg"}[fmt]
    for class_index, (name, count) in enumerate(counts.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for variant in range(count):
            pattern_image(class_index, variant).save(folder / f"{name}_{variant:03d}.{suffix}", fmt)
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Three classes of eight generated images each."""
    return write_image_folder(tmp_path / "images", {"red": 8, "green": 8, "blue": 8})


# --------------------------------------------------------------------------- real browser

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def _is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(4) == b"\x7fELF"
    except OSError:
        return False


def chromium_executable() -> Path | None:
    """The real Chromium binary (``/usr/bin/chromium`` is a wrapper script on Debian)."""
    candidates: list[Path] = []
    if os.environ.get("PROBE_STUDIO_CHROMIUM"):
        candidates.append(Path(os.environ["PROBE_STUDIO_CHROMIUM"]))
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        listed = subprocess.run(
            ["dpkg", "-L", "chromium"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.split()
        candidates += [Path(line) for line in listed if line.endswith("/chromium")]
    candidates.append(Path("/usr/lib/chromium/chromium"))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK) and _is_elf(candidate):
            return candidate
    return None


@pytest.fixture(scope="session")
def playwright_driver():
    """The one Playwright of the test session: its sync API allows one at a time per process,
    so every browser (``chromium_browser``, the fake-camera one) is launched from it."""
    with sync_api.sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="session")
def chromium_browser(playwright_driver):
    """Debian's Chromium, headless, through Playwright's sync API."""
    executable = chromium_executable()
    if executable is None:
        pytest.fail(
            "no Chromium binary found: run `apt-get install chromium` (scripts/test.sh does)"
        )
    browser = playwright_driver.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
    try:
        yield browser
    finally:
        browser.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def streamlit_server(
    log_path: Path,
    env: dict[str, str],
    extra_args: tuple[str, ...] = (),
    start_timeout: float = 60,
) -> Iterator[tuple[str, subprocess.Popen]]:
    """``streamlit run app.py`` on a free local port, offline; yields (base URL, process).
    Fails when it is not healthy within ``start_timeout`` seconds."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "streamlit", "run", "app.py",
        "--server.headless", "true", "--server.address", "127.0.0.1", "--server.port", str(port),
        "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false", *extra_args,
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + start_timeout
        while not healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Streamlit did not start:\n{log_path.read_text(errors='replace')}")
            time.sleep(0.25)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
