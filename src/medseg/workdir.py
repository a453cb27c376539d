"""The working directory: one folder holds everything a dataset's runs produce.

```
WORKDIR/fingerprint.json   WORKDIR/plans.json   WORKDIR/splits.json
WORKDIR/preprocessed/<config>/   WORKDIR/models/<config>/fold_<k>/
WORKDIR/predictions/   WORKDIR/evaluation/
```
"""

from __future__ import annotations

from pathlib import Path

from medseg.io.dataset import read_dataset_info


def default_workdir(dataset: str | Path) -> Path:
    """`./medseg_work/<dataset name>`: derived from the dataset, never from the environment."""
    info = read_dataset_info(dataset)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in info.name) or Path(dataset).name
    return Path("medseg_work") / safe


def resolve_workdir(dataset: str | Path, workdir: str | Path | None) -> Path:
    path = Path(workdir) if workdir else default_workdir(dataset)
    path.mkdir(parents=True, exist_ok=True)
    return path
