"""What keeping the execution-path decision saves: encoder loads in fresh processes, the first
with an empty decision store (it calibrates: times the candidate paths), the next ones reading
the stored decision (they time nothing).

    python bench/path_decisions.py [--encoder bundled:efficientnet-lite0] [--rounds 3]

Each round uses a new, empty store: process 1 decides, processes 2 and 3 read. Printed per
process: the load's wall time, whether it calibrated, the calibration's own seconds (as the
decision records them) and the path; then the median load time of deciding and reading
processes and the seconds saved per process. Quote the load average printed with it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

LOAD = """
import json, time
import torch
started = time.perf_counter()
from probe_core.encoders import load_encoder
encoder = load_encoder({encoder!r}, device="cpu")
seconds = time.perf_counter() - started
print(json.dumps({{"load_s": seconds, **encoder.path_choice.record()}}))
"""


def load_in_new_process(encoder: str, store: Path) -> dict:
    env = {**os.environ, "PROBE_STUDIO_PATHS_DIR": str(store), "PYTHONPATH": str(REPO)}
    ran = subprocess.run(
        [sys.executable, "-c", LOAD.format(encoder=encoder)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    if ran.returncode != 0:
        raise SystemExit(f"loading {encoder} failed:\n{ran.stderr}")
    return json.loads(ran.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default="bundled:efficientnet-lite0")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--readers", type=int, default=2, help="processes per round that read")
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}, {os.cpu_count()} CPUs")
    deciding, reading, calibration = [], [], []
    for round_ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="probe-paths-bench-") as store:
            for process in range(1 + args.readers):
                record = load_in_new_process(args.encoder, Path(store))
                kind = "decides" if record["calibrated_in_this_process"] else "reads  "
                print(
                    f"round {round_ + 1} process {process + 1} {kind}: load"
                    f" {record['load_s']:6.2f} s, calibration {record['calibration_seconds']:6.2f}"
                    f" s, path {record['name']}"
                )
                if record["calibrated_in_this_process"]:
                    deciding.append(record["load_s"])
                    calibration.append(record["calibration_seconds"])
                else:
                    reading.append(record["load_s"])
    if deciding and reading:
        first, later = statistics.median(deciding), statistics.median(reading)
        print(
            f"median load: deciding process {first:.2f} s (calibration"
            f" {statistics.median(calibration):.2f} s), reading process {later:.2f} s;"
            f" saved per later process {first - later:.2f} s"
        )
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
