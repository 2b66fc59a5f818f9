"""What the pickers offer: every model already in the local Hugging Face cache first
(marked on disk, with its size), then each family's short curated list, then the
weight-free encoders; and ready-made sets for a comparison.

Nothing here touches the network: "needs download" is read from the local cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .base import DEFAULT_ENCODER, EncoderInfo
from .hub import hub_cache_dir, is_cached
from .registry import FAMILIES, parse_name


def on_disk_encoders(cache_dir: str | Path | None = None) -> list[EncoderInfo]:
    """Every encoder a model repo in the Hugging Face cache holds, with the repo's size on
    disk, largest family first as the registry lists them; curated descriptions where known."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        scanned = scan_cache_dir(cache_dir or hub_cache_dir())
    except (CacheNotFound, OSError):
        return []
    curated = {info.name: info for family in FAMILIES.values() for info in family.catalogue()}
    found = []
    for repo in sorted(scanned.repos, key=lambda repo: repo.repo_id.lower()):
        if repo.repo_type != "model":
            continue
        names = sorted(
            {
                str(file.file_path.relative_to(revision.snapshot_path))
                for revision in repo.revisions
                for file in revision.files
            }
        )
        for family in FAMILIES.values():
            for name in family.recognise(repo.repo_id, names):
                known = curated.get(name)
                found.append(
                    EncoderInfo(
                        name,
                        known.description
                        if known
                        else f"{repo.repo_id}, in the Hugging Face cache",
                        needs_download=False,
                        family=family.name,
                        on_disk_bytes=repo.size_on_disk,
                    )
                )
    return found


def list_encoders() -> list[EncoderInfo]:
    """On disk first, then the curated models of every family (bundled first), then the
    weight-free ones (baselines, random weights); each name once."""
    listed = on_disk_encoders()
    seen = {info.name for info in listed}
    offered = [
        info for family in FAMILIES.values() for info in family.catalogue() if info.name not in seen
    ]
    return listed + sorted(offered, key=lambda info: info.weight_free)


def describe(name: str, infos: list[EncoderInfo] | None = None) -> EncoderInfo:
    """The listed info of ``name``, or one made from the name (any name a user types; whether
    it needs a download is read from the local cache)."""
    for info in infos if infos is not None else list_encoders():
        if info.name == name:
            return info
    family, spec = parse_name(name)
    weights = family.hub_weights(spec)
    return EncoderInfo(
        name,
        f"{family.name} model {spec}",
        needs_download=weights is not None and not is_cached(weights.repo, weights.choose),
        weight_free=family.weight_free(spec),
        family=family.name,
    )


@dataclass(frozen=True)
class ReadySet:
    """A ready-made comparison: its title, the encoders, and which of them need a download."""

    title: str
    names: tuple[str, ...]
    downloads: tuple[str, ...]

    @property
    def label(self) -> str:
        if not self.downloads:
            return f"{self.title} (all on disk or offline)"
        count = len(self.downloads)
        return f"{self.title} ({count} download{'s' if count > 1 else ''})"


# Roles of the first ready set: what a name must contain, and what to download otherwise.
ROLES = (
    (
        "CLIP",
        lambda name: "clip" in name.lower() and "siglip" not in name.lower(),
        "open_clip:ViT-B-32/laion2b_s34b_b79k",
    ),
    (
        "SigLIP 2",
        lambda name: "siglip2" in name.lower().replace("-", "").replace("_", ""),
        "open_clip:hf-hub:timm/ViT-B-16-SigLIP2",
    ),
    ("DINOv2", lambda name: "dinov2" in name.lower(), "timm:vit_small_patch14_dinov2.lvd142m"),
)
RANDOM_TWIN = {  # an offline pair: the bundled weights against the same network, random
    DEFAULT_ENCODER: "timm:tf_efficientnet_lite0@random",
}


def ready_sets(infos: list[EncoderInfo] | None = None) -> list[ReadySet]:
    """ "CLIP vs SigLIP 2 vs DINOv2" (what is on disk, else a download each), "pretrained vs
    random weights" (a model on disk and the same architecture with random weights, else the
    bundled encoder and its random twin: offline), and "bundled vs trivial baselines"."""
    infos = infos if infos is not None else list_encoders()
    on_disk = [info.name for info in infos if info.on_disk]
    downloads = {info.name for info in infos if info.needs_download and not info.on_disk}
    trio = []
    for _role, fits, fallback in ROLES:
        trio.append(next((name for name in on_disk if fits(name)), fallback))
    sets = [_ready("CLIP vs SigLIP 2 vs DINOv2", trio, on_disk, downloads)]
    pretrained = next((name for name in on_disk if _random_twin(name)), DEFAULT_ENCODER)
    sets.append(
        _ready(
            "pretrained vs random weights",
            [pretrained, _random_twin(pretrained) or RANDOM_TWIN[DEFAULT_ENCODER]],
            on_disk,
            downloads,
        )
    )
    sets.append(
        _ready(
            "bundled vs trivial baselines",
            [DEFAULT_ENCODER, "baseline:pixels", "baseline:color-histogram"],
            on_disk,
            downloads,
        )
    )
    return sets


def _random_twin(name: str) -> str | None:
    """The same architecture with random weights, for timm and open_clip pretrained names."""
    if name in RANDOM_TWIN:
        return RANDOM_TWIN[name]
    family, spec = parse_name(name)
    if family.name == "timm" and "@" not in spec:
        return f"timm:{spec.split('.')[0]}@random"
    if family.name == "open_clip" and "/" in spec and "@" not in spec and ":" not in spec:
        return f"open_clip:{spec.split('/')[0]}"
    return None


def _ready(title: str, names: list[str], on_disk: list[str], downloads: set[str]) -> ReadySet:
    needed = tuple(
        name
        for name in names
        if name not in on_disk and (name in downloads or _needs_weights(name))
    )
    return ReadySet(title, tuple(names), needed)


def _needs_weights(name: str) -> bool:
    family, spec = parse_name(name)
    return family.name in ("timm", "hf", "open_clip") and not family.weight_free(spec)
