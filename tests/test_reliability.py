"""benchmarks/reliability.py: every listed bad input is answered in one line, exit 2, with nothing written."""
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "reliability.py"


def test_every_bad_input_of_the_reliability_table_is_answered_as_promised(tmp_path):
    res = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "r.md")], capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    rows = [line for line in (tmp_path / "r.md").read_text().splitlines() if line.startswith("| ")][1:]
    assert len(rows) >= 112 and all("| ok |" in row for row in rows)
