"""Classroom benchmark, run on demand (not a test): many browser sessions on one server.

For each session count (8, 16 and 30 by default) a fresh ``streamlit run app.py`` serves one
headless Chromium with that many browser contexts (one Streamlit session each). A warm-up
session first runs the probe on a small folder, as the teacher would before the class (the
encoder loads, UMAP compiles). Then every student session uploads its own folder on the
Browse tab (30-60 images in 3 classes named after the session, distinct pixels: nothing is
shared through the embedding cache), and all press *Run probe* together. Each session's
Results page is then checked against its own folder: its classes on the confusion matrix,
every image scored, an accuracy above chance.

Printed per session count:

- the server's resident memory after the warm-up, its peak (``VmHWM``) and the growth per
  student session;
- seconds from *Run probe* to the session's results (its accuracy on screen), p50, p95, max;
- the shared embedding queue: batches, how full, how many held several sessions' images;
- where a session's seconds went on the server (from its log): waiting in the embedding
  queue, embedding, fitting the probe;
- the CPU time the browsers (Chromium, Playwright's driver) used meanwhile;
- the load average before and after (other users of the machine count too).

The browsers run on the same machine as the server, so their page rendering competes with
it; in a classroom each student's browser runs on their own laptop. ``--browsers-last``
starts Chromium at the idle CPU priority: the server comes first on the cores and the pages
render on what it leaves (the time to results still ends when the accuracy is on screen).

Usage::

    nice -n 10 python bench/classroom.py                    # 8, 16 and 30 sessions
    nice -n 10 python bench/classroom.py --sessions 4       # one quick count
    python bench/classroom.py --sessions 30 --browsers-last # the server first on the cores
    nice -n 10 python bench/classroom.py --py-spy stacks.txt --sessions 8   # profile the server
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.folders import pattern  # noqa: E402
from probe_core.wording import plural  # noqa: E402

COLOURS = ("red", "green", "blue")
FOLDER_SIZES = (30, 40, 50, 60)  # images per student folder, in turn
IMAGE_SIDE = 96
RESULTS_TIMEOUT_MS = 600_000
READY_TIMEOUT_MS = 300_000
CONNECTING_AT_ONCE = 4  # sessions opening their page and uploading at the same time


@dataclass
class StudentFolder:
    path: Path
    classes: list[str]
    images: int


@dataclass
class SessionOutcome:
    """One student session: how long its results took and whether they were its own."""

    folder: StudentFolder
    seconds: float | None = None
    accuracy: float | None = None
    scored: int | None = None
    classes_shown: list[str] = field(default_factory=list)
    waiting_texts: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def correct(self) -> bool:
        return (
            not self.error
            and self.classes_shown == self.folder.classes
            and self.scored == self.folder.images
            and self.accuracy is not None
            and self.accuracy > 1 / len(self.folder.classes)
        )

    def problem(self) -> str:
        if self.error:
            return self.error
        return (
            f"expected classes {self.folder.classes} and {self.folder.images} images scored;"
            f" saw {self.classes_shown}, {self.scored} scored, accuracy {self.accuracy}"
        )


@dataclass
class ServerLog:
    """What the server logged about each session's run (see ``studio/shared.py``)."""

    embed_seconds: list[float]
    wait_seconds: list[float]
    fit_seconds: list[float]
    fit_wait_seconds: list[float]
    batches: int
    batch_size: int
    images: int
    fill: float
    shared_batches: int


@dataclass
class ClassroomRun:
    sessions: int
    outcomes: list[SessionOutcome]
    rest_rss_mib: float
    peak_rss_mib: float
    end_rss_mib: float
    warm_up_seconds: float
    server_cpu_seconds: float  # from every Run probe to the last result
    browsers_cpu_seconds: float  # the same span, Chromium and Playwright's driver
    browsers_last: bool
    log: ServerLog | None
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]

    @property
    def seconds(self) -> list[float]:
        return sorted(o.seconds for o in self.outcomes if o.seconds is not None)

    @property
    def all_correct(self) -> bool:
        return all(outcome.correct for outcome in self.outcomes)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile, nearest rank (p95 of 30 values: the 29th smallest)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def write_student_folders(root: Path, sessions: int, first: int = 0) -> list[StudentFolder]:
    """Folders for students ``first`` .. ``first + sessions - 1``: no two share an image."""
    folders = []
    for number in range(first, first + sessions):
        images = FOLDER_SIZES[number % len(FOLDER_SIZES)]
        path = root / f"student-{number:02d}"
        classes = [f"{colour}-{number:02d}" for colour in COLOURS]
        for class_index, name in enumerate(classes):
            (path / name).mkdir(parents=True, exist_ok=True)
            count = images // len(classes) + (class_index < images % len(classes))
            for variant in range(count):
                image = pattern(class_index, 10_000 * (number + 1) + variant, IMAGE_SIDE)
                image.save(path / name / f"{variant:03d}.png")
        folders.append(StudentFolder(path, sorted(classes), images))
    return folders


# ----------------------------------------------------------------------------- the server


@contextlib.contextmanager
def serve(work: Path) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """``streamlit run app.py`` on a free local port with its own caches; (URL, process, log)."""
    from tests.conftest import streamlit_server

    log_path = work / "streamlit.log"
    env = {**os.environ, "PROBE_STUDIO_CACHE_DIR": str(work / "cache")}
    with streamlit_server(log_path, env, start_timeout=120) as (url, process):
        yield url, process, log_path


def memory_mib(pid: int, field_name: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (the peak) of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field_name)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def browsers_cpu_seconds(server_pid: int) -> float:
    """CPU time so far of this process's descendants other than the server (and its own):
    Playwright's driver and the Chromium processes it started."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):  # ended meanwhile
                parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    total, stack = 0.0, list(children.get(os.getpid(), []))
    while stack:
        pid = stack.pop()
        if pid != server_pid:
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
            stack.extend(children.get(pid, []))
    return total


def reset_peak(pid: int) -> bool:
    """Start ``VmHWM`` again from the current RSS (Linux 4.0+: write 5 to clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class RssSampler:
    """The highest RSS seen every 0.2 s, where ``VmHWM`` cannot be reset."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            with contextlib.suppress(OSError, KeyError):
                self.peak = max(self.peak, memory_mib(self.pid, "VmRSS"))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


EMBEDDED = re.compile(
    r"session (\S+) embedded (\d+) images \((\d+) from the cache\) in ([\d.]+) s, ([\d.]+) s of"
    r" it until its first rows came back; queue: (\d+) batches of up to (\d+), (\d+) images,"
    r" ([\d.]+) full, (\d+) shared"
)
FITTED = re.compile(
    r"session (\S+) fitted the probe in ([\d.]+) s(?: after ([\d.]+) s waiting for a free core)?"
)


def read_server_log(text: str, skip_sessions: set[str]) -> ServerLog | None:
    """The embedding and fitting lines of the student sessions (not the warm-up's)."""
    embedded = [m for m in EMBEDDED.finditer(text) if m.group(1) not in skip_sessions]
    fitted = [m for m in FITTED.finditer(text) if m.group(1) not in skip_sessions]
    if not embedded:
        return None
    last = embedded[-1]
    warm = [m for m in EMBEDDED.finditer(text) if m.group(1) in skip_sessions]
    warm_batches = int(warm[-1].group(6)) if warm else 0
    warm_images = int(warm[-1].group(8)) if warm else 0
    batches = int(last.group(6)) - warm_batches
    batch_size = int(last.group(7))
    images = int(last.group(8)) - warm_images
    return ServerLog(
        embed_seconds=[float(m.group(4)) for m in embedded],
        wait_seconds=[float(m.group(5)) for m in embedded],
        fit_seconds=[float(m.group(2)) for m in fitted],
        fit_wait_seconds=[float(m.group(3) or 0) for m in fitted],
        batches=batches,
        batch_size=batch_size,
        images=images,
        fill=images / (batches * batch_size) if batches else 0.0,
        shared_batches=int(last.group(10)),
    )


def session_ids(log_text: str) -> set[str]:
    return {m.group(1) for m in EMBEDDED.finditer(log_text)} | {
        m.group(1) for m in FITTED.finditer(log_text)
    }


# ----------------------------------------------------------------------------- the browsers


def chromium_executable(work: Path, browsers_last: bool = False) -> Path:
    """The Chromium binary; with ``browsers_last``, a wrapper in ``work`` that starts it at
    the idle CPU priority (``chrt --idle``; its renderers inherit it): the browsers get only
    what the server leaves of the cores, as if they ran on the students' own machines."""
    from tests.conftest import chromium_executable as find

    found = find()
    if found is None:
        raise RuntimeError("no Chromium binary found: apt-get install chromium")
    if not browsers_last:
        return found
    wrapper = work / "chromium-idle-priority"
    wrapper.write_text(f'#!/bin/sh\nexec chrt --idle 0 "{found}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


async def open_session(browser, url: str, folder: StudentFolder):
    """A new browser context on the Data page with ``folder`` uploaded on the Browse tab."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(READY_TIMEOUT_MS)
    page = await context.new_page()
    await page.goto(url)
    await page.get_by_role("button", name="Run probe").wait_for()
    await page.get_by_role("tab", name="Browse").click()
    uploader = page.get_by_test_id("stFileUploader").filter(has_text="Pick a folder")
    await uploader.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(folder.path)
    heading = f"Uploaded folder “{folder.path.name}” ({folder.images} files)"
    await page.get_by_role("heading", name=heading).wait_for()
    await idle(page)
    return context, page


async def idle(page) -> None:
    await page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for()


# Checked in the page every POLL_MS: the progress bar's texts seen so far, and whether the
# accuracy is on screen. One cheap check per page; Playwright's own locator waits, repeated
# twice a second, cost 30 waiting pages about 1.4 of the machine's two cores (the server's
# share went to the harness).
RESULTS_SHOWN = """() => {
  const seen = (window.__probeStudioWaitingTexts = window.__probeStudioWaitingTexts || []);
  for (const bar of document.querySelectorAll('[data-testid="stProgress"]')) {
    const text = bar.innerText;
    if (text && !seen.includes(text)) seen.push(text);
  }
  for (const metric of document.querySelectorAll('[data-testid="stMetric"]')) {
    const label = metric.querySelector('[data-testid="stMetricLabel"]');
    if (label && label.innerText.trim() === "Accuracy") return true;
  }
  return false;
}"""
POLL_MS = 250


async def run_and_read(page, outcome: SessionOutcome) -> None:
    """Press Run probe; the time until the accuracy shows; then read the Results page."""
    accuracy = page.get_by_test_id("stMetric").filter(has=page.get_by_text("Accuracy", exact=True))
    started = time.perf_counter()
    await page.get_by_role("button", name="Run probe").click()
    await page.wait_for_function(RESULTS_SHOWN, polling=POLL_MS, timeout=RESULTS_TIMEOUT_MS)
    outcome.seconds = time.perf_counter() - started
    outcome.waiting_texts = await page.evaluate("window.__probeStudioWaitingTexts || []")
    await idle(page)
    value = await accuracy.get_by_test_id("stMetricValue").inner_text()
    outcome.accuracy = float(value.rstrip("%")) / 100
    caption = await page.get_by_text(re.compile(r"\d[\d,]* images? scored")).first.inner_text()
    outcome.scored = int(re.search(r"([\d,]+) images? scored", caption).group(1).replace(",", ""))
    shown = await page.wait_for_function(  # the confusion matrix's data, once Plotly has it
        "() => { const gd = document.querySelector('.st-key-confusion .js-plotly-plot');"
        " return gd && gd.data && gd.data.length ? Array.from(gd.data[0].x) : null; }",
        timeout=READY_TIMEOUT_MS,
    )
    outcome.classes_shown = await shown.json_value()


async def drive_classroom(
    url: str, folders: list[StudentFolder], warm: StudentFolder, chromium: Path
):
    """The warm-up session, then every student session pressing Run probe together."""
    from playwright.async_api import async_playwright

    from tests.conftest import CHROMIUM_ARGS

    outcomes = [SessionOutcome(folder) for folder in folders]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS
        )
        try:
            began = time.perf_counter()
            warm_context, warm_page = await open_session(browser, url, warm)
            warm_outcome = SessionOutcome(warm)
            await run_and_read(warm_page, warm_outcome)
            warm_seconds = time.perf_counter() - began
            yield "warm", warm_seconds

            gate = asyncio.Semaphore(CONNECTING_AT_ONCE)

            async def connect(folder):
                async with gate:
                    return await open_session(browser, url, folder)

            opened = await asyncio.gather(*(connect(f) for f in folders), return_exceptions=True)
            yield "ready", None

            async def one(outcome: SessionOutcome, session) -> None:
                if isinstance(session, BaseException):
                    outcome.error = f"did not open: {session}"
                    return
                try:
                    await run_and_read(session[1], outcome)
                except Exception as error:
                    outcome.error = f"{type(error).__name__}: {error}"[:500]

            await asyncio.gather(*(one(o, s) for o, s in zip(outcomes, opened, strict=True)))
            yield "done", outcomes
            for session in opened:
                if not isinstance(session, BaseException):
                    await session[0].close()
            await warm_context.close()
        finally:
            await browser.close()


def run_in_own_loop(coroutine_function):
    """``asyncio.run`` in a thread of its own: under pytest, Playwright's sync API (the other
    browser tests' driver) keeps an event loop running in the main thread, where
    ``asyncio.run`` refuses to start."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="classroom-sessions") as pool:
        return pool.submit(lambda: asyncio.run(coroutine_function())).result()


def run_classroom(
    sessions: int, work: Path, py_spy: Path | None = None, browsers_last: bool = False
) -> ClassroomRun:
    """One server, one warm-up session, then ``sessions`` student sessions at once; with
    ``browsers_last`` the browsers run only on what the server leaves of the cores."""
    chromium = chromium_executable(work, browsers_last)
    folders = write_student_folders(work / "folders", sessions)
    (warm,) = write_student_folders(work / "warm-up", 1, first=sessions)  # its own images
    load_before = os.getloadavg()
    with serve(work) as (url, process, log_path):

        async def main():
            steps = drive_classroom(url, folders, warm, chromium)
            _, warm_seconds = await steps.__anext__()
            await asyncio.sleep(2)  # the warm-up's background map
            rest = memory_mib(process.pid, "VmRSS")
            warm_sessions = session_ids(log_path.read_text(errors="replace"))
            await steps.__anext__()  # every student session open, its folder uploaded
            exact_peak = reset_peak(process.pid)
            cpu_before = cpu_seconds(process.pid)
            browsers_before = browsers_cpu_seconds(process.pid)
            sampler = RssSampler(process.pid)
            spy = None
            if py_spy is not None:
                spy = subprocess.Popen(
                    ["py-spy", "record", "--pid", str(process.pid), "--format", "raw",
                     "--output", str(py_spy), "--rate", "20", "--nonblocking", "--threads"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
            _, outcomes = await steps.__anext__()
            cpu = cpu_seconds(process.pid) - cpu_before
            browsers = browsers_cpu_seconds(process.pid) - browsers_before
            if spy is not None:
                spy.send_signal(2)  # SIGINT: py-spy writes its file
                spy.wait(timeout=60)
            sampled = sampler.stop()
            peak = memory_mib(process.pid, "VmHWM") if exact_peak else sampled
            end = memory_mib(process.pid, "VmRSS")
            with contextlib.suppress(StopAsyncIteration):
                await steps.__anext__()
            return outcomes, rest, peak, end, warm_seconds, warm_sessions, cpu, browsers

        outcomes, rest, peak, end, warm_seconds, warm_sessions, cpu, browsers = run_in_own_loop(
            main
        )
        log = read_server_log(log_path.read_text(errors="replace"), warm_sessions)
    return ClassroomRun(
        sessions=sessions,
        outcomes=outcomes,
        rest_rss_mib=rest,
        peak_rss_mib=max(peak, rest),
        end_rss_mib=end,
        warm_up_seconds=warm_seconds,
        server_cpu_seconds=cpu,
        browsers_cpu_seconds=browsers,
        browsers_last=browsers_last,
        log=log,
        load_before=load_before,
        load_after=os.getloadavg(),
    )


def report(run: ClassroomRun) -> str:
    seconds = run.seconds
    lines = [
        f"{run.sessions} sessions: {sum(o.correct for o in run.outcomes)}/{run.sessions} got"
        f" their own correct results",
        f"  server RSS: {run.rest_rss_mib:,.0f} MiB after the warm-up session, peak"
        f" {run.peak_rss_mib:,.0f} MiB, {run.end_rss_mib:,.0f} MiB at the end;"
        f" {(run.peak_rss_mib - run.rest_rss_mib) / run.sessions:.0f} MiB per student session"
        f" at the peak",
    ]
    if seconds:
        lines.append(
            f"  Run probe -> results: p50 {percentile(seconds, 50):.1f} s, p95"
            f" {percentile(seconds, 95):.1f} s, max {seconds[-1]:.1f} s"
            f" (warm-up session, encoder load included: {run.warm_up_seconds:.0f} s)"
        )
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines.extend(
        [
            f"  server CPU time from Run probe to the last result: {run.server_cpu_seconds:.0f} s"
            f" ({run.server_cpu_seconds / run.sessions:.1f} s per session): on {cores} otherwise"
            f" idle cores the last result would come after about"
            f" {run.server_cpu_seconds / cores:.0f} s (the browsers' own rendering not counted)",
            f"  the browsers' CPU time meanwhile (Chromium and Playwright's driver, on the same"
            f" cores{', at idle priority' if run.browsers_last else ''}):"
            f" {run.browsers_cpu_seconds:.0f} s"
            f" ({run.browsers_cpu_seconds / run.sessions:.1f} s per session)",
        ]
    )
    log = run.log
    if log is not None:
        lines.append(
            f"  embedding queue: {log.images} images in {log.batches} batches of up to"
            f" {log.batch_size}, {log.fill:.0%} full;"
            f" {plural(log.shared_batches, 'batch', 'batches')} held several sessions' images"
        )
        if log.embed_seconds and log.fit_seconds:

            def spread(values: list[float]) -> str:
                return f"{percentile(values, 50):.1f} / {percentile(values, 95):.1f} s"

            lines.append(
                f"  on the server, per session (p50 / p95): embedding {spread(log.embed_seconds)},"
                f" of it until the first rows came back {spread(log.wait_seconds)}; waiting for"
                f" a free core to fit {spread(log.fit_wait_seconds)}; fitting the probe"
                f" {spread(log.fit_seconds)}"
            )
    waits = [t for o in run.outcomes for t in o.waiting_texts if "in line" in t]
    if waits:
        lines.append(f"  a waiting session saw: {waits[len(waits) // 2]!r}")
    lines.append(
        "  load average before "
        + " ".join(f"{v:.1f}" for v in run.load_before)
        + ", after "
        + " ".join(f"{v:.1f}" for v in run.load_after)
    )
    for outcome in run.outcomes:
        if not outcome.correct:
            lines.append(f"  WRONG {outcome.folder.path.name}: {outcome.problem()}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[8, 16, 30])
    parser.add_argument("--py-spy", type=Path, help="record the server's stacks (raw) here")
    parser.add_argument(
        "--browsers-last",
        action="store_true",
        help="run Chromium at the idle CPU priority (chrt --idle): the browsers take only what"
        " the server leaves, as if they ran on the students' own machines",
    )
    parser.add_argument("--keep", type=Path, help="keep the server's log and folders here")
    args = parser.parse_args(argv)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python"
        f" {platform.python_version()}, load average"
        f" {' '.join(f'{v:.1f}' for v in os.getloadavg())}",
        flush=True,
    )
    failed = False
    for sessions in args.sessions:
        with tempfile.TemporaryDirectory(prefix="probe-studio-classroom-") as temporary:
            work = Path(temporary)
            run = run_classroom(sessions, work, args.py_spy, args.browsers_last)
            print(report(run), flush=True)
            failed |= not run.all_correct
            if args.keep:
                target = args.keep / f"{sessions}-sessions"
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(work, target, ignore=shutil.ignore_patterns("cache"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
