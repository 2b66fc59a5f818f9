"""Rebuild the bundled demo image folder ``assets/demo/``.

The demo set is 24 Noto Emoji images (64x64 PNG) from each of six emoji
categories, taken from the npm package ``emoji-datasource-google`` 16.0.0.
Each category becomes one class folder; the PNG bytes are copied unchanged.

Usage::

    python scripts/build_demo.py                      # runs `npm pack` itself
    python scripts/build_demo.py --package path/to/package
    python scripts/build_demo.py --package emoji-datasource-google-16.0.0.tgz
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

PACKAGE_NAME = "emoji-datasource-google"
PACKAGE_VERSION = "16.0.0"
PER_CLASS = 24
IMAGE_SUBDIR = Path("img") / "google" / "64"

# Emoji category name -> class folder name.
CATEGORIES: dict[str, str] = {
    "Smileys & Emotion": "smileys_emotion",
    "Animals & Nature": "animals_nature",
    "Food & Drink": "food_drink",
    "Travel & Places": "travel_places",
    "Flags": "flags",
    "Objects": "objects",
}

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "assets" / "demo"
SAFE_NAME = re.compile(r"[a-z0-9][a-z0-9_+-]*")

LICENSE_TEMPLATE = """\
# Demo images: sources and licenses

The images in `assets/demo/` are **Noto Emoji** by Google, licensed under the
**Apache License 2.0** (<https://github.com/googlefonts/noto-emoji>,
license text: <https://www.apache.org/licenses/LICENSE-2.0>). The noto-emoji
repository notes that its flag images (from `third_party/region-flags`) are in
the public domain or otherwise exempt from copyright.

They were taken unchanged (64x64 PNG) from the npm package
[`{name}` {version}](https://www.npmjs.com/package/{name}), part of the
emoji-data project (<https://github.com/iamcal/emoji-data>). The image choice
and category names come from that package's `emoji.json` metadata, which is
MIT-licensed; its license is reproduced below.

## How the folder was built

```
python scripts/build_demo.py
```

The script downloads the package with `npm pack {name}@{version}` (or uses
`--package DIR_OR_TGZ`), keeps emoji with a Google image, and for each of the
six categories below sorts the emoji by `sort_order` and takes {per_class}
evenly spaced ones, so each class spans its whole category. Each class folder
holds only PNG files, named by the emoji's short name.

| Class folder | Emoji category | Images |
|---|---|---|
{table}

## emoji-data license (MIT)

```
{mit}
```
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--package",
        type=Path,
        help=f"extracted npm package dir or .tgz of {PACKAGE_NAME}@{PACKAGE_VERSION} "
        "(default: fetch it with `npm pack`)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output folder (default: assets/demo)"
    )
    return parser.parse_args(argv)


def is_needed(name: str) -> bool:
    """Whether a tarball member is one the build reads."""
    parts = PurePosixPath(name).parts[1:]  # drop the leading "package/"
    if len(parts) == 1:
        return parts[0] in {"emoji.json", "package.json", "LICENSE"}
    return parts[: len(IMAGE_SUBDIR.parts)] == IMAGE_SUBDIR.parts


def safe_extract(tgz: Path, dest: Path) -> Path:
    """Extract an npm tarball into ``dest``, refusing unsafe members; return the package dir."""
    with tarfile.open(tgz, "r:gz") as tar:
        members = tar.getmembers()
        for member in members:
            parts = PurePosixPath(member.name).parts
            if member.name.startswith(("/", "\\")) or PurePosixPath(member.name).is_absolute():
                raise ValueError(f"refusing absolute path in tarball: {member.name!r}")
            if ".." in parts or any(":" in p or "\\" in p for p in parts):
                raise ValueError(f"refusing unsafe path in tarball: {member.name!r}")
            if not (member.isfile() or member.isdir()):
                raise ValueError(f"refusing non-regular member in tarball: {member.name!r}")
        # Only what the build reads; skips the large sprite sheets.
        wanted = [m for m in members if is_needed(m.name)]
        if hasattr(tarfile, "data_filter"):  # 3.10.12+, 3.11.4+, 3.12+
            tar.extractall(dest, members=wanted, filter="data")
        else:  # older patch releases: members were checked above
            tar.extractall(dest, members=wanted)
    return find_package_dir(dest)


def npm_pack(dest: Path) -> Path:
    """Download the package tarball with ``npm pack`` into ``dest``; return its path."""
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm not found; install Node.js or pass --package DIR_OR_TGZ")
    spec = f"{PACKAGE_NAME}@{PACKAGE_VERSION}"
    print(f"npm pack {spec} ...", file=sys.stderr)
    subprocess.run([npm, "pack", spec], cwd=dest, check=True, stdout=subprocess.DEVNULL)
    tarballs = sorted(dest.glob("*.tgz"))
    if len(tarballs) != 1:
        raise SystemExit(f"expected one .tgz from npm pack in {dest}, found {len(tarballs)}")
    return tarballs[0]


def find_package_dir(path: Path) -> Path:
    """Return the directory holding ``emoji.json`` (``path`` itself or ``path/package``)."""
    for candidate in (path, path / "package"):
        if (candidate / "emoji.json").is_file():
            return candidate
    raise SystemExit(f"no emoji.json found in {path} or {path / 'package'}")


def check_version(package_dir: Path) -> None:
    """Fail unless the package is the expected name and version (the licence notice states it)."""
    meta = json.loads((package_dir / "package.json").read_text(encoding="utf-8"))
    found = (meta.get("name"), meta.get("version"))
    if found != (PACKAGE_NAME, PACKAGE_VERSION):
        raise SystemExit(f"expected {PACKAGE_NAME}@{PACKAGE_VERSION}, got {found[0]}@{found[1]}")


def spread(entries: list[dict], k: int) -> list[dict]:
    """Take ``k`` evenly spaced entries across ``entries`` (all of them if fewer)."""
    n = len(entries)
    if n <= k:
        return list(entries)
    indices = sorted({round(i * n / k) for i in range(k)})
    return [entries[i] for i in indices]


def select(package_dir: Path) -> dict[str, list[dict]]:
    """Pick the demo emoji for each class folder from ``emoji.json``."""
    emoji = json.loads((package_dir / "emoji.json").read_text(encoding="utf-8"))
    image_dir = package_dir / IMAGE_SUBDIR
    chosen: dict[str, list[dict]] = {}
    for category, folder in CATEGORIES.items():
        entries = [
            e
            for e in emoji
            if e.get("category") == category
            and e.get("has_img_google")
            and (image_dir / e["image"]).is_file()
        ]
        entries.sort(key=lambda e: (e["sort_order"], e["short_name"]))
        picked = spread(entries, PER_CLASS)
        names = [e["short_name"] for e in picked]
        bad = [name for name in names if not SAFE_NAME.fullmatch(name)]
        if bad or len(set(names)) != len(names):
            raise SystemExit(f"unusable or duplicate short names in {category}: {bad or names}")
        chosen[folder] = picked
    return chosen


def clean_output(out: Path) -> None:
    """Remove what a previous run wrote: the class folders' PNGs, the folders, the licence notice.

    Everything is checked before anything is deleted, so a folder holding files this
    script did not write stops the run with nothing removed.
    """
    if out.is_symlink():
        raise SystemExit(f"refusing to write into symlinked output dir {out}")
    class_dirs = [out / folder for folder in CATEGORIES.values()]
    for class_dir in class_dirs:
        if class_dir.is_symlink() or (class_dir.exists() and not class_dir.is_dir()):
            raise SystemExit(f"refusing to remove {class_dir}: not a plain directory")
        if class_dir.is_dir():
            foreign = sorted(p.name for p in class_dir.iterdir() if not is_our_png(p))
            if foreign:
                raise SystemExit(f"{class_dir} holds files this script did not write: {foreign}")
    license_file = license_path(out)
    if license_file.is_symlink() or (license_file.exists() and not license_file.is_file()):
        raise SystemExit(f"refusing to replace {license_file}: not a plain file")

    for class_dir in class_dirs:
        if class_dir.is_dir():
            for png in class_dir.iterdir():
                png.unlink()
            class_dir.rmdir()
    license_file.unlink(missing_ok=True)


def license_path(out: Path) -> Path:
    """The licence notice sits beside the demo folder, so the folder holds only class images."""
    return out.parent / f"{out.name}-LICENSE.md"


def is_our_png(path: Path) -> bool:
    """Whether ``path`` looks like a PNG this script wrote into a class folder."""
    return path.suffix == ".png" and path.is_file() and not path.is_symlink()


def write_demo(package_dir: Path, chosen: dict[str, list[dict]], out: Path) -> None:
    """Copy the chosen PNGs into ``out/<class>/`` and write the licence notice beside ``out``."""
    image_dir = package_dir / IMAGE_SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    for folder, entries in chosen.items():
        class_dir = out / folder
        class_dir.mkdir()
        for entry in entries:
            data = (image_dir / entry["image"]).read_bytes()
            (class_dir / f"{entry['short_name']}.png").write_bytes(data)

    table = "\n".join(
        f"| `{folder}` | {category} | {len(chosen[folder])} |"
        for category, folder in CATEGORIES.items()
    )
    mit = (package_dir / "LICENSE").read_text(encoding="utf-8").strip()
    text = LICENSE_TEMPLATE.format(
        name=PACKAGE_NAME, version=PACKAGE_VERSION, per_class=PER_CLASS, table=table, mit=mit
    )
    license_path(out).write_text(text, encoding="utf-8", newline="\n")


def build(package: Path | None, out: Path) -> dict[str, list[dict]]:
    """Rebuild ``out`` from ``package`` (dir or .tgz), fetching it with npm if None."""
    with tempfile.TemporaryDirectory(prefix="build_demo_") as tmp:
        tmp_dir = Path(tmp)
        if package is None:
            package_dir = safe_extract(npm_pack(tmp_dir), tmp_dir / "extract")
        elif package.is_file():
            package_dir = safe_extract(package, tmp_dir / "extract")
        else:
            package_dir = find_package_dir(package)
        check_version(package_dir)
        chosen = select(package_dir)
        clean_output(out)
        write_demo(package_dir, chosen, out)
    return chosen


def main(argv: list[str] | None = None) -> int:
    """Entry point: rebuild the demo folder and print a per-class summary."""
    args = parse_args(argv)
    chosen = build(args.package, args.out)
    for folder, entries in chosen.items():
        note = "" if len(entries) == PER_CLASS else f"  (only {len(entries)} available)"
        print(f"{folder:16s} {len(entries):3d} images{note}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
