"""The Ray executor on a local two-CPU cluster writes the same trials as a local run."""

from __future__ import annotations

import pytest

from test_bench_runner import assert_same_trials, bench

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'relulab[ray]')")


@pytest.fixture(scope="module")
def local_cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_executor_matches_the_local_executor(local_cluster, tmp_path):
    code, on_ray = bench(tmp_path / "ray", "--executor", "ray")
    assert code == 0
    _, local = bench(tmp_path / "local", "--workers", "1")
    assert_same_trials(on_ray, local)
