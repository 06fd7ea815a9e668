"""peltc — a declarative language and compiler for parameter-efficient tuning."""
__version__ = "0.1.0"
