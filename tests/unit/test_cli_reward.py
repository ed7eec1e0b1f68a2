"""`rlhf score` and `rlhf compare` on a small saved reward model."""

import json

from typer.testing import CliRunner

from flows.cli import app
from rlhf.reward import RewardModel
from rlhf.train.models import build_gpt2, load_tokenizer
from rlhf.train.toy import make_toy_world

A = "\\n\\nHuman: How do I water a fern?\\n\\nAssistant: Water it weekly."
B = "\\n\\nHuman: How do I water a fern?\\n\\nAssistant: No."


def test_score_and_compare_agree_with_python_api(tmp_path):
    paths = make_toy_world(tmp_path / "world", n_sft=16, n_pref=16)
    tok = load_tokenizer(paths.tokenizer)
    backbone = tmp_path / "backbone"
    build_gpt2(tok, n_layer=1, n_head=2, n_embd=16, n_positions=64, seed=0).save_pretrained(backbone)
    RewardModel.from_backbone(backbone, tokenizer=tok, seed=0).save_pretrained(tmp_path / "rm")
    rm = RewardModel.from_pretrained(tmp_path / "rm")
    texts = [t.replace("\\n", "\n") for t in (A, B)]

    runner = CliRunner()
    scored = runner.invoke(app, ["score", A, B, "--model", str(tmp_path / "rm")])
    assert scored.exit_code == 0, scored.output
    printed = [float(line.split("\t")[0]) for line in scored.output.strip().splitlines()]
    assert printed == [round(v, 4) for v in rm.score(texts)]

    compared = runner.invoke(app, ["compare", A, B, "--model", str(tmp_path / "rm")])
    assert compared.exit_code == 0, compared.output
    result = json.loads(compared.output)
    assert result == json.loads(json.dumps(rm.compare(*texts)))
    assert result["preference"] in ("a", "b") and 0.0 <= result["confidence"] <= 1.0
