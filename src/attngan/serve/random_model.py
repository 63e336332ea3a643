"""A randomly initialised `tiny` model folder: a stand-in for tests and load tests of the server.

Its images are noise-like (nothing is trained), but every shape, file and code path is the real
one. The vocabulary covers the page's example prompts.
"""

from __future__ import annotations

from pathlib import Path

WORDS = (
    "a an the this that bird has with wings are is and of black white blue red yellow green brown "
    "grey orange small large belly breast crown bill beak tail head short long pointed"
).split()


def save_random_tiny_model(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a model folder (config, vocab, safetensors) of random `tiny` networks to `out_dir`."""
    import torch

    from attngan.config import preset
    from attngan.networks import build_generator, build_image_encoder, build_text_encoder
    from attngan.text import Vocabulary
    from attngan.training.checkpoint import save_model_folder

    torch.manual_seed(seed)
    cfg = preset("tiny")
    vocab = Vocabulary.build([WORDS])
    text_encoder = build_text_encoder(cfg, len(vocab))
    generator = build_generator(cfg, cfg.text.embedding_dim)
    image_encoder = build_image_encoder(cfg)
    return save_model_folder(out_dir, cfg, vocab, generator, text_encoder, image_encoder,
                             extra={"note": "random weights (untrained), for tests"})
