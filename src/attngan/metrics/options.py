"""`EvalOptions`, everything `attngan eval` can be told, and the check of the values no metric
could run with.

The options sit below the evaluation, its context and the metrics, which all read them.
"""

from __future__ import annotations

from dataclasses import dataclass

from attngan.errors import AttnGANError


@dataclass
class EvalOptions:
    metrics: list[str] | None = None     # None: every metric whose inputs are available
    num_images: int = 30000
    splits: int = 10
    batch: int = 32
    seed: int = 0
    device: str = "auto"
    inception: str | None = None         # torchvision inception_v3_google-*.pth
    fid_inception: str | None = None     # pytorch-fid pt_inception-2015-12-05-6726825d.pth
    is_classifier: str | None = None     # an Inception-v3 state dict (N classes) or an oracle folder
    eval_damsm: str | None = None        # a DAMSM run folder for R-precision / localisation
    oracle: str | None = None            # an oracle folder (attngan train-oracle)
    captioner: str | None = None         # a captioner folder or bundled name (attngan train-captioner)
    judge: str | None = None             # a SynthScenes judge folder; None: the bundled one on SynthScenes data
    cache_dir: str | None = None         # real-image features; default <data>/cache/metrics
    split: str = "test"
    real_images: int | None = None       # cap on the real images behind the statistics
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    is_shuffle_seed: int | None = None   # IS: shuffle before the splits (torch-fidelity: 2020); None: improved-gan
    fid_resize: str = "pytorch-fid"      # fid/kid: "pytorch-fid" or "tf1" (torch-fidelity's TF1 resize)
    real_transform: str = "center"       # real images: "center" crop, or "original" (train crop + flip, seeded)
    rp_protocol: str = "dmgan"           # R-precision sampling: "dmgan" or "set" (metrics/r_precision.py)
    progress: bool = True
    strict: bool = True                  # a requested metric without its inputs is an error (else skipped)
    prompts: str | None = None           # a prompt file: generate for its prompts, not the test captions


def check_options(o: EvalOptions) -> None:
    """The option values that no metric could run with fail here, before anything loads."""
    if o.num_images < 1 or o.batch < 1 or o.splits < 1:
        raise AttnGANError("--num-images, --batch and --splits must be at least 1")
    for flag, value, allowed in (("--fid-resize", o.fid_resize, ("pytorch-fid", "tf1")),
                                 ("--real-transform", o.real_transform, ("center", "original")),
                                 ("--rp-protocol", o.rp_protocol, ("dmgan", "set"))):
        if value not in allowed:
            raise AttnGANError(f"{flag} must be one of {', '.join(allowed)}, got '{value}'")
    if o.is_shuffle_seed is not None and not 0 <= o.is_shuffle_seed < 2 ** 32:
        raise AttnGANError(f"--is-shuffle-seed must be in [0, 2**32), got {o.is_shuffle_seed}")
