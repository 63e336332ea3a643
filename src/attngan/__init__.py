"""attngan: AttnGAN (Xu et al., CVPR 2018) — text to image with word attention."""

__version__ = "0.1.0"

from attngan.config import Config, load_config, preset  # noqa: E402
from attngan.errors import AttnGANError  # noqa: E402

__all__ = ["AttnGANError", "AttnGANPipeline", "Captioner", "Config", "load_config", "preset", "__version__"]


def __getattr__(name):
    # The pipeline pulls in torch: import it only when asked for.
    if name == "AttnGANPipeline":
        from attngan.pipeline import AttnGANPipeline

        return AttnGANPipeline
    if name == "Captioner":
        from attngan.captioner import Captioner

        return Captioner
    raise AttributeError(name)
