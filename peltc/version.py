"""peltc's version, in a module that imports nothing (artifacts record it without importing `peltc.api`)."""

__version__ = "0.1.0"
