"""Generated image folders for benchmarks: N classes of small seeded PNGs, written once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

PALETTE = [
    (220, 40, 40), (40, 160, 60), (40, 70, 220), (230, 200, 30), (150, 50, 180),
    (30, 180, 190), (240, 130, 20), (120, 120, 120), (200, 90, 150), (90, 60, 30),
]  # fmt: skip


def pattern(class_index: int, variant: int, size: int) -> Image.Image:
    """A class-specific colour and stripe frequency, with per-image shifts, tint and noise, so
    that classes overlap a little (a probe is good, not perfect)."""
    rng = np.random.default_rng(1_000_003 * class_index + variant)
    base = np.array(PALETTE[class_index % len(PALETTE)], dtype=float)
    base = base * rng.uniform(0.6, 1.2) + rng.normal(0, 35, 3)
    pixels = np.tile(base, (size, size, 1))
    period = 2 + class_index % 5 + int(rng.integers(0, 2))
    offset = int(rng.integers(0, period))
    stripes = ((np.arange(size) + offset) // period) % 2 == 0
    if (class_index // 5 + variant) % 2:
        pixels[:, stripes, :] *= rng.uniform(0.4, 0.8)
    else:
        pixels[stripes, :, :] *= rng.uniform(0.4, 0.8)
    pixels += rng.normal(0, 30, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def synthetic_folder(root: Path, n_images: int, n_classes: int = 10, size: int = 28) -> Path:
    """``root/class_k/NNNNN.png``, ``n_images`` in all; reused when already complete."""
    root = Path(root)
    marker = root / f".complete-{n_images}-{n_classes}-{size}"
    if marker.exists():
        return root
    per_class = n_images // n_classes
    for class_index in range(n_classes):
        folder = root / f"class_{class_index}"
        folder.mkdir(parents=True, exist_ok=True)
        for variant in range(per_class):
            pattern(class_index, variant, size).save(folder / f"{variant:05d}.png")
    marker.touch()
    return root


def synthetic_embeddings_file(
    path: Path,
    n_rows: int = 100_000,
    dim: int = 512,
    n_classes: int = 50,
    image_root: Path | None = None,
    images_every: int = 100,
    seed: int = 0,
) -> Path:
    """A Parquet file of ``path, label, vector`` rows shaped like image embeddings: unit
    vectors around a shared direction, class means in a low-rank subspace, overlapping
    enough that a probe is far from perfect. With ``image_root``, the paths are absolute files
    there, and every ``images_every``-th row's file is written (a small PNG), so thumbnails
    resolve for those rows only. Reused when it exists."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    labels = np.arange(n_rows) % n_classes
    rank = min(64, dim)
    basis = np.linalg.qr(rng.normal(size=(dim, rank)))[0].astype(np.float32)
    means = rng.normal(size=(n_classes, rank)).astype(np.float32)
    latent = means[labels] + 2.5 * rng.normal(size=(n_rows, rank)).astype(np.float32)
    shared = rng.normal(size=dim).astype(np.float32)
    vectors = 3.0 * shared / np.linalg.norm(shared) + 0.25 * latent @ basis.T
    vectors += 0.05 * rng.normal(size=(n_rows, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    folder = Path(image_root) if image_root is not None else Path("images")
    paths = [
        str(folder / f"class_{label:02d}" / f"{row:06d}.png") for row, label in enumerate(labels)
    ]
    if image_root is not None:
        for row in range(0, n_rows, images_every):
            target = Path(paths[row])
            target.parent.mkdir(parents=True, exist_ok=True)
            pattern(int(labels[row]), row, 16).save(target)
    table = pa.table(
        {
            "path": paths,
            "label": [f"class {label:02d}" for label in labels],
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.part")
    pq.write_table(table, partial)
    partial.replace(path)
    return path
