"""Tiny models of every family, written the way their libraries write them, and a Hugging
Face cache filled by hand in the layout huggingface_hub expects: what the encoder tests load
offline."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

COMMIT = "0123456789abcdef0123456789abcdef01234567"  # a made-up 40-hex commit
CLIP_WORDS = ["a", "photo", "of", "the", "red", "green", "blue", "class", "picture", "image"]

OPEN_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
OPEN_CLIP_PREPROCESS = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


def fill_hub_cache(cache: Path, repo: str, files: dict[str, Path], commit: str = COMMIT) -> Path:
    """Put ``files`` (name in the repo -> file) into ``cache`` as huggingface_hub would:
    content-addressed blobs, a snapshot of symlinks to them, and ``refs/main``."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    snapshot = folder / "snapshots" / commit
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        data = Path(source).read_bytes()
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("../" * (len(Path(name).parts) + 1)) / "blobs" / blob.name)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    return snapshot


def save_tiny_dinov2(folder: Path) -> Path:
    """A DINOv2-style transformers model (no text tower) and its image processor."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    torch.manual_seed(7)
    Dinov2Model(config).save_pretrained(folder)
    BitImageProcessor(
        size={"shortest_edge": 36},
        crop_size={"height": 32, "width": 32},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(folder)
    return folder


def clip_tokenizer():
    """A word-level tokenizer built offline (no vocabulary download), CLIP-style specials."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", "<bos>", "<eos>", *CLIP_WORDS]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
    )


def save_tiny_clip(folder: Path) -> Path:
    """A CLIP-style transformers model with a text tower, its image processor and tokenizer."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tokenizer = clip_tokenizer()
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 32,
            "pad_token_id": 0,
            "bos_token_id": 2,
            "eos_token_id": 3,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    torch.manual_seed(11)
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_open_clip(folder: Path):
    """A tiny open_clip model saved as an ``hf-hub:`` repo holds it (config + safetensors);
    returns the model."""
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(3)
    model = open_clip.CLIP(**OPEN_CLIP_CONFIG).eval()
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": OPEN_CLIP_CONFIG, "preprocess_cfg": OPEN_CLIP_PREPROCESS}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    save_file(model.state_dict(), folder / "open_clip_model.safetensors")
    return model


def folder_files(folder: Path) -> dict[str, Path]:
    return {path.name: path for path in folder.iterdir() if path.is_file()}
