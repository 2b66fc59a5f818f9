"""Server-side folders: allowed only under roots the operator configures."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

ROOTS_ENV = "PROBE_STUDIO_SERVER_ROOTS"
DEMO_ROOT = Path(__file__).resolve().parent.parent / "assets" / "demo"


class FolderNotAllowedError(PermissionError):
    """A server path outside the configured roots, or one that cannot be used."""


def configured_roots() -> list[Path]:
    """``$PROBE_STUDIO_SERVER_ROOTS`` (os.pathsep-separated), else only the bundled demo."""
    value = os.environ.get(ROOTS_ENV, "")
    roots = [Path(part) for part in value.split(os.pathsep) if part.strip()]
    return [root.resolve() for root in roots] or [DEMO_ROOT]


def resolve_server_folder(requested: str, roots: Sequence[Path] | None = None) -> Path:
    """The real folder for ``requested`` if it lies under a root, else FolderNotAllowedError.

    Relative paths are taken relative to the first root. ``~``, ``..`` and symlinks
    that lead outside every root are refused.
    """
    real = resolve_server_path(requested, roots, what="folder")
    if not real.is_dir():
        raise FolderNotAllowedError(f"'{requested.strip()}' is not a folder")
    return real


def resolve_server_path(
    requested: str, roots: Sequence[Path] | None = None, what: str = "file or folder"
) -> Path:
    """The real file or folder for ``requested`` under a root, as ``resolve_server_folder``."""
    roots = [Path(root).resolve() for root in (roots or configured_roots())]
    text = requested.strip()
    if not text:
        raise FolderNotAllowedError(f"no {what} given")
    if text.startswith("~"):
        raise FolderNotAllowedError(f"'{text}': home-folder paths (~) are not allowed")
    candidate = Path(text)
    if ".." in candidate.parts:
        raise FolderNotAllowedError(f"'{text}': '..' is not allowed in server paths")
    if not candidate.is_absolute():
        candidate = roots[0] / candidate
    try:
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError) as error:
        raise FolderNotAllowedError(f"'{text}': no such {what} on the server") from error
    if not any(real == root or real.is_relative_to(root) for root in roots):
        allowed = ", ".join(str(root) for root in roots)
        raise FolderNotAllowedError(
            f"'{text}' is outside the allowed server folders ({allowed}); the operator can"
            f" allow more with the {ROOTS_ENV} environment variable"
        )
    return real
