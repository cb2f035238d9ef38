"""Glue between a searched recipe and other training frameworks (imported on demand)."""
