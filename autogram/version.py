"""autogram's version (its own module: the records that carry it import nothing else)."""

__version__ = "0.1.0"
