"""Experiment configs: `default.py` is the base; every other file imports it and changes a few fields."""
