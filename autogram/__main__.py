"""``python -m autogram``."""

from autogram.cli import main

main()
