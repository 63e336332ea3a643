"""A model folder's card (config.json's "model_card"): what it says about the data set and the
evaluation protocol of the model, and `export_bundle`, which writes a trained model as a bundled one.

A card names the model, the seed and commands that made it, its measurements, and the SynthBirds
set (`data`) and evaluation protocol (`eval`) it was made and measured with; `attngan demo` reads
the last two back to evaluate a shipped model as it was evaluated. What a card does not say takes
DEFAULT_DATA and DEFAULT_EVAL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attngan.io import load, read, save_model_folder

# The SynthBirds set and the evaluation protocol of a model card that does not name its own.
DEFAULT_DATA = {"images": 11788, "classes": 884, "size": 256, "seed": 0}
DEFAULT_EVAL = {"num_images": 400, "seed": 0, "splits": 10,
                "metrics": ["r_precision", "binding", "attention_colour", "is", "fid_oracle"]}
# The keys of a metric row that a card keeps.
CARD_METRIC_KEYS = ("name", "metric", "value", "std", "protocol", "n", "per_attribute", "swap_rate", "per_stage")


def card_settings(model: str | Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(name, data, eval) from a model folder's card (a folder, run folder or bundled name, read
    through attngan.io); what the card does not say takes the defaults, and a card without a name
    is named after its folder."""
    loaded = read(model, "generator")
    card = loaded.meta.get("model_card") or {}
    data = {k: (card.get("data") or {}).get(k, v) for k, v in DEFAULT_DATA.items()}
    ev = {k: (card.get("eval") or {}).get(k, v) for k, v in DEFAULT_EVAL.items()}
    ev["metrics"] = list(ev["metrics"])
    return str(card.get("name") or loaded.folder.name), data, ev


def export_bundle(model_dir: str | Path, bundle: str | Path, metrics: list[dict[str, Any]], commands: list[str],
                  seed: int, timings: dict[str, Any], *, name: str = "synthbirds-tiny",
                  data: dict[str, Any] | None = None, eval_settings: dict[str, Any] | None = None) -> Path:
    """Write the model folder in half precision (BatchNorm statistics stay float32) with its card:
    name, measurements (report rows), the commands that made it, and the data set and evaluation
    protocol (`data`, `eval`) that `attngan demo` reads back from a shipped model."""
    # Built unfused, with the image encoder: every weight is saved as it was trained.
    loaded = load(model_dir, "generator", "cpu", ("generator", "text_encoder", "image_encoder"))
    ev = dict(DEFAULT_EVAL, **(eval_settings or {}))
    card = {"name": name, "seed": seed, "commands": commands, "timings_s": timings,
            "data": {k: (data or {}).get(k, v) for k, v in DEFAULT_DATA.items()},
            "eval": {k: ev[k] for k in ("num_images", "seed", "metrics")},
            "metrics": [{k: m.get(k) for k in CARD_METRIC_KEYS} for m in metrics]}
    m = loaded.modules
    return save_model_folder(bundle, loaded.config, loaded.vocab, m["generator"], m["text_encoder"],
                             m["image_encoder"], half=True, extra={"model_card": card})
