"""Support code shared by every package: typed configs from YAML (config.py) and JSONL / atomic
file writes (files.py). The lowest layer: it imports nothing else of the project."""
