"""Test helpers shared by several test files (imported as `helpers`: pytest puts tests/ on the path)."""

from __future__ import annotations

from pathlib import Path

# The serve page's example prompts and the words tests caption with.
PAGE_WORDS = (
    "a an the this that bird has with wings are is and of black white blue red yellow green brown "
    "grey orange small large belly breast crown bill beak tail head short long pointed"
).split()


def save_random_tiny_model(out_dir: str | Path, seed: int = 0, vocab=None, bn_stats: bool = False,
                           preset_name: str = "tiny", name: str | None = None) -> Path:
    """A model folder (config, vocab, safetensors) of randomly initialised `tiny` networks (or those
    of another CPU-sized preset): every shape, file and code path is the real one, its images are
    noise, its config named `name` (default: the preset's). `vocab` defaults to PAGE_WORDS;
    `bn_stats` gives the generator non-trivial BatchNorm statistics, so eval-mode paths are exercised."""
    import torch

    from attngan.config import preset
    from attngan.io import save_model_folder
    from attngan.networks import build_generator, build_image_encoder, build_text_encoder
    from attngan.text import Vocabulary

    torch.manual_seed(seed)
    cfg = preset(preset_name)
    cfg.name = name or cfg.name
    vocab = vocab if vocab is not None else Vocabulary.build([PAGE_WORDS])
    text_encoder = build_text_encoder(cfg, len(vocab))
    generator = build_generator(cfg, cfg.text.embedding_dim)
    image_encoder = build_image_encoder(cfg)
    if bn_stats:
        for m in generator.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return save_model_folder(out_dir, cfg, vocab, generator, text_encoder, image_encoder,
                             extra={"note": "random weights (untrained), for tests"})
