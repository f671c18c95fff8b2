"""scripts/ray-slurm.sbatch starts no Ray head without token authentication.

Run outside SLURM with stand-ins on PATH (``srun`` runs its command here; ``ray`` answers like a
Ray of a chosen version and logs its calls), so the checks are seen to act: an old Ray, a Ray
that does not read the job's token, and a head that answers an unauthenticated client.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "ray-slurm.sbatch"

FAKE_RAY = """#!/bin/bash
echo "ray $*" >> "$FAKE_LOG"
case "$1" in
    --version) echo "ray, version $FAKE_RAY_VERSION" ;;
    get-auth-token)  # Ray's precedence: RAY_AUTH_TOKEN, then RAY_AUTH_TOKEN_PATH
        if [[ -n "${FAKE_RAY_TOKEN:-}" ]]; then printf %s "$FAKE_RAY_TOKEN"
        elif [[ -n "${RAY_AUTH_TOKEN:-}" ]]; then printf %s "$RAY_AUTH_TOKEN"
        else cat "$RAY_AUTH_TOKEN_PATH"; fi ;;
    start) exec sleep 30 ;;
    status)
        if [[ "${RAY_AUTH_MODE:-}" == token || -n "${FAKE_RAY_OPEN:-}" ]]; then echo " 1 node_abc"
        else echo "AuthenticationError: token missing" >&2; exit 1; fi ;;
esac
"""
STUBS = {
    "ray": FAKE_RAY,
    "srun": '#!/bin/bash\nwhile [[ "$1" == -* ]]; do [[ "$1" == -w ]] && shift; shift; done\nexec "$@"\n',
    "scontrol": "#!/bin/bash\necho node1\n",
    "getent": "#!/bin/bash\necho '127.0.0.1 STREAM node1'\n",
}


def _run(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in STUBS.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755 | stat.S_IXUSR)
    log = tmp_path / "calls.log"
    full = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "SLURM_"))},
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SLURM_JOB_ID": "77",
        "SLURM_JOB_NODELIST": "node1",
        "SLURM_SUBMIT_DIR": str(tmp_path),
        "MUGS_ORCH": "echo mugs-orch",
        "FAKE_LOG": str(log),
        "FAKE_RAY_VERSION": "2.60.0",
        **env,
    }
    r = subprocess.run(
        ["bash", str(SCRIPT), "spec.yaml"], env=full, capture_output=True, text=True, timeout=120
    )
    assert not list(tmp_path.glob(".ray-77.*")), "the job directory (and its token) is removed"
    return r, log.read_text() if log.exists() else ""


def test_token_authenticated_head_starts_and_the_sweep_runs(tmp_path):
    r, calls = _run(tmp_path, RAY_AUTH_TOKEN="the-submitters-token")  # unset by the script
    assert r.returncode == 0, r.stderr
    assert "mugs-orch sweep spec.yaml --backend ray --address 127.0.0.1:6379" in r.stdout
    assert "ray start --head" in calls


@pytest.mark.parametrize(
    "env, words",
    [
        ({"FAKE_RAY_VERSION": "2.51.0"}, "Ray 2.51.0 has no token authentication"),
        ({"FAKE_RAY_VERSION": "2.9.3"}, "Ray 2.9.3 has no token authentication"),
        ({"FAKE_RAY_TOKEN": "another-token"}, "does not give this job's token"),
    ],
    ids=["2.51", "2.9", "other-token"],
)
def test_no_head_without_token_authentication(tmp_path, env, words):
    r, calls = _run(tmp_path, **env)
    assert r.returncode == 2, r.stderr
    assert "refusing to start a Ray head" in r.stderr and words in r.stderr
    assert "ray start" not in calls and "mugs-orch" not in r.stdout


def test_a_head_that_answers_without_the_token_is_stopped(tmp_path):
    r, calls = _run(tmp_path, FAKE_RAY_OPEN="1")
    assert r.returncode == 2, r.stderr
    assert "answers a client without the token" in r.stderr
    assert "ray start --head" in calls and "mugs-orch" not in r.stdout
