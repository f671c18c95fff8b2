"""The chaos benchmark's verdict: a run counts as passed only when its tests ran and passed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("chaos_under_load", REPO / "benchmarks" / "chaos_under_load.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_skipped_test_is_not_a_pass_and_a_real_pass_is(tmp_path: Path) -> None:
    (tmp_path / "test_skips.py").write_text("import pytest\n\ndef test_s():\n    pytest.skip('no cluster')\n")
    (tmp_path / "test_passes.py").write_text("def test_p():\n    assert 1 + 1 == 2\n")
    bench = _bench()
    skipped = bench.run_once([str(tmp_path / "test_skips.py")], 120.0)
    assert skipped["rc"] == 0 and skipped["skipped"] and not skipped["passed"]
    ran = bench.run_once([str(tmp_path / "test_passes.py")], 120.0)
    assert ran["passed"] and not ran["skipped"]
