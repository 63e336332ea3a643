"""Applications built on the package's public API (docs/ARCHITECTURE.md, "Public API"): nothing in
the library imports them, and they import nothing else of it (tests/test_architecture.py)."""
