"""User-facing errors: the CLI prints these as one line, never as a traceback."""


class AttnGANError(Exception):
    """Bad input, a missing file, an incompatible model: something the user can fix."""
