"""benchmarks/trl_compare.py on its project side only (TRL not needed): one step of each trainer on
the tiny size, each in its own worker process, and a table row per trainer with positive throughput;
with `--precision bf16`, where the CPU multiplies bf16 natively, the steps run under autocast."""

import pytest

from benchmarks.trl_compare import Runs, best_step_speed, paired, per_host_speed, ratio_cell, run, samples_per_s
from benchmarks.trl_peer.settings import TRAINERS
from rlhf.train.runtime import cpu_has_bf16


def test_project_side_has_a_row_per_trainer():
    lines: list[str] = []
    runs = run(["--sizes", "tiny", "--steps", "1", "--repeats", "1", "--threads", "1"], with_trl=False, warmup=0,
               say=lines.append)
    for trainer in TRAINERS:
        (result,) = runs[trainer, "tiny", "project"].results
        assert samples_per_s(result) > 0 and result["rss_mib"] > 0
        assert result["probe_flops"] > 1e9  # the host's matmul rate around the run
        (row,) = [line for line in lines if line.split()[:3] == [trainer, "tiny", "project"]]
        assert float(row.split()[3]) > 0  # samples/s as printed
        (peer,) = [line for line in lines if line.split()[:3] == [trainer, "tiny", "TRL"]]
        assert "skipped" in peer


def test_ratios_pair_runs_and_divide_out_the_hosts_speed():
    """Two repeats, the TRL side twice as slow as the project's. In the first pair the machine ran at
    half speed during the TRL run (its probe says so): the raw ratio reads 4x, the per-host one 2x."""
    def result(seconds: float, probe: float) -> dict:
        return {"samples_per_step": 8, "step_seconds": [seconds], "probe_flops": probe}

    mine = Runs([result(1.0, 2e11), result(1.0, 2e11)])
    peer = Runs([result(4.0, 1e11), result(2.0, 2e11)])
    assert paired(mine, peer, samples_per_s) == [4.0, 2.0]
    assert paired(mine, peer, per_host_speed) == [2.0, 2.0]
    assert ratio_cell([4.0, 2.0, 2.5]) == "2.50x (2.00-4.00)" and ratio_cell([1.5]) == "1.50x"
    slowed = Runs([{"samples_per_step": 8, "step_seconds": [4.0, 2.0, 3.0]}, {"samples_per_step": 8, "step_seconds": [2.5]}])
    assert best_step_speed(slowed) == 4.0  # 8 samples in its fastest step, 2 s


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16 matmul")
def test_bf16_runs_the_step_under_autocast_and_reports_against_both_peaks():
    def sft_losses(precision: str, lines: list[str]) -> list[float]:
        runs = run(["--sizes", "tiny", "--trainers", "sft", "--steps", "1", "--repeats", "1", "--threads", "1",
                    "--precision", precision], with_trl=False, warmup=1, say=lines.append)
        return runs["sft", "tiny", "project"].results[0]["losses"]

    fp32_lines, bf16_lines = [], []
    fp32, bf16 = sft_losses("fp32", fp32_lines), sft_losses("bf16", bf16_lines)
    # same weights and batches: bf16 matmuls round differently, so the losses differ, but only a little
    assert fp32 != bf16
    assert bf16 == pytest.approx(fp32, rel=2e-3)
    (head,) = [line for line in bf16_lines if line.startswith("trainer")]
    assert "of fp32" in head and not any("of fp32" in line for line in fp32_lines)
    (row,) = [line for line in bf16_lines if line.split()[:3] == ["sft", "tiny", "project"]]
    _, mfu_bf16, mfu_fp32 = (float(cell.lstrip("±").rstrip("%")) for cell in row.split() if cell.endswith("%"))
    assert mfu_fp32 > mfu_bf16 > 0  # the same FLOP rate against the lower fp32 peak


def test_a_given_checkpoint_runs_every_trainer_with_its_own_tokenizer_and_chat_template(tmp_path):
    """`--model DIR`: a Llama with a ChatML template (ids, specials and prompt length its own) as the
    size `model`; each trainer's step runs on it and the PPO prompts carry its template."""
    from benchmarks.trl_peer import fixtures as fx
    from rlhf.chat import encode_prompt
    from rlhf.train import load_tokenizer
    from tests.chatml import IM_START, save_tiny_chat_llama

    model_dir = save_tiny_chat_llama(tmp_path / "llama")
    lines: list[str] = []
    runs = run(["--model", str(model_dir), "--steps", "1", "--repeats", "1", "--threads", "1"], with_trl=False,
               warmup=0, say=lines.append)
    for trainer in TRAINERS:
        (result,) = runs[trainer, fx.MODEL_SIZE, "project"].results
        assert samples_per_s(result) > 0 and result["losses"][0] > 0
    # the fixtures themselves: written again here, as the run wrote them in its temporary folder
    root = tmp_path / "fixtures"
    fx.write_model_fixtures(root, model_dir, steps=1)
    tok = load_tokenizer(model_dir)
    data = fx.read_data(root)
    specials = set(tok.all_special_ids)
    row = data["sft"][0]["input_ids"]
    assert row[0] == tok.bos_token_id and row[-1] == tok.eos_token_id and not specials & set(row[1:-1])
    prompt = data["prompts"][0]
    assert prompt["ids"] == encode_prompt(tok, prompt["text"]) and IM_START in tok.decode(prompt["ids"])
    assert len(prompt["ids"]) == len(encode_prompt(tok, "")) + 16 > 32  # the template alone is long


def test_an_unknown_checkpoint_directory_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run(["--model", str(tmp_path)], with_trl=False)
    assert "no config.json" in capsys.readouterr().err
