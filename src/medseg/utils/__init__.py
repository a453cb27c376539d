"""Small helpers shared by every stage: atomic file writing and JSON."""

from medseg.utils.files import atomic_path, read_json, write_json

__all__ = ["atomic_path", "read_json", "write_json"]
