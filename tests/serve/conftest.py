"""Fixtures of the serve tests: real servers on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest_helpers import KEY, running


@pytest.fixture(scope="module")
def server(cnn: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The small CNN served with an API key and a 1 MiB body limit, no batching."""
    import rtinfer
    from rtinfer.serve import create_app, load_repository

    repo = tmp_path_factory.mktemp("repo")
    rtinfer.save_artifact(cnn, repo, "cnn")
    app = create_app(load_repository(repo, threads=1), api_key=KEY, max_body_bytes=1 << 20)
    with running(app) as url:
        yield url
