"""The test suite's own Redis databases: two runs on one machine never share one."""

from __future__ import annotations

import pytest
from quorum_testing import REDIS_URL, redis_database


@pytest.mark.redis
def test_a_redis_database_held_by_another_run_is_passed_over() -> None:
    base = REDIS_URL.rpartition("/")[0]
    with redis_database(f"{base}/12") as first, redis_database(f"{base}/12") as second:
        assert first == f"{base}/12"
        assert second == f"{base}/11"
    with redis_database(f"{base}/12") as again:
        assert again == f"{base}/12"
