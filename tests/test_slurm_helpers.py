"""SLURM helpers against the real cluster: MaxArraySize from scontrol, array splitting, the UI command."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from orchestration.backends.slurm import claimed_job_ids, max_array_size, split_for_arrays


def test_split_for_arrays_keeps_indices_below_the_limit():
    chunks = split_for_arrays(2500, 1001)
    assert [len(c) for c in chunks] == [1000, 1000, 500]
    assert sum(len(c) for c in chunks) == 2500 and all(len(c) <= 1000 for c in chunks)
    assert list(chunks[1])[0] == 1000


def test_claimed_job_ids_tell_array_tasks_from_plain_jobs():
    """The listings as squeue (``%i|%j``) and sacct (``JobID,JobName``) print them: a pending array
    is one line ``6_[0-1]``, its started tasks ``6_0``; submitit submits a batch of one job
    without ``--array``, so that job is ``2`` and sacct has no ``2_0`` (a claim resolved to
    ``2_0`` was waited for forever)."""
    listing = "6_[0-1]|sw-a\n2|sw-b\n3|sw-b-knn\n6_0|sw-a\n7_[0-1]|sw-a-knn\n\nbad line\n"
    assert claimed_job_ids(listing, "1") == {"sw-a": "6_1", "sw-a-knn": "7_1", "sw-b": "2", "sw-b-knn": "3"}
    assert claimed_job_ids("", "0") == {}


@pytest.mark.slurm
def test_max_array_size_is_read_from_the_cluster(slurm_cluster):
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.strip().startswith("MaxArraySize"))
    assert max_array_size() == int(line.split("=")[1])


def test_ui_serves_the_store_on_loopback(tmp_path, services):
    port = services.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestration.cli", "ui", "--workdir", str(tmp_path), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        services.wait_http_ok(f"http://127.0.0.1:{port}/health", 180, proc)
        assert (tmp_path / "mlflow.db").exists()
    finally:
        services.stop_process_group(proc)
        time.sleep(0.5)
