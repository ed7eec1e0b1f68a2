"""benchmarks/trl_compare.py on its project side only (TRL not needed): one step of each trainer on
the tiny size, each in its own worker process, and a table row per trainer with positive throughput."""

from benchmarks.trl_compare import run, samples_per_s
from benchmarks.trl_peer.settings import TRAINERS


def test_project_side_has_a_row_per_trainer():
    lines: list[str] = []
    runs = run(["--sizes", "tiny", "--steps", "1", "--repeats", "1", "--threads", "1"], with_trl=False, warmup=0,
               say=lines.append)
    for trainer in TRAINERS:
        (result,) = runs[trainer, "tiny", "project"].results
        assert samples_per_s(result) > 0 and result["rss_mib"] > 0
        (row,) = [line for line in lines if line.split()[:3] == [trainer, "tiny", "project"]]
        assert float(row.split()[3]) > 0  # samples/s as printed
        (peer,) = [line for line in lines if line.split()[:3] == [trainer, "tiny", "TRL"]]
        assert "skipped" in peer
