"""benchmarks/stage_option.py runs stages in a temporary project that links the profile's inputs:
a stage it runs must write there, never through a link into the profile's own outputs."""

from pathlib import Path

from benchmarks.stage_option import link_inputs


def make_profile(root: Path) -> Path:
    for name in ("models/m", "artifacts/data", "artifacts/tokenizer", "artifacts/sft"):
        (root / name).mkdir(parents=True)
        (root / name / "marker").write_text(name)
    return root


def test_inputs_are_linked_and_the_stages_own_outputs_are_not(tmp_path):
    profile = make_profile(tmp_path / "profile")
    for stages, linked_sft in ((["reward", "dpo"], True), (["sft", "reward"], False)):
        work = tmp_path / "-".join(stages)
        link_inputs(profile, work, stages)
        assert (work / "models").is_symlink() and (work / "models/m/marker").read_text() == "models/m"
        assert (work / "artifacts/data").is_symlink() and (work / "artifacts/tokenizer").is_symlink()
        assert (work / "artifacts/sft").is_symlink() is linked_sft
    # SFT runs in `work`: its output directory is its own, and the profile's SFT output is untouched
    (work / "artifacts/sft").mkdir()
    (work / "artifacts/sft/marker").write_text("new")
    assert (profile / "artifacts/sft/marker").read_text() == "artifacts/sft"


def test_a_profile_without_a_tokenizer_output_links_what_it_has(tmp_path):
    profile = tmp_path / "profile"
    (profile / "artifacts/data").mkdir(parents=True)
    link_inputs(profile, tmp_path / "work", ["sft"])
    assert sorted(p.name for p in (tmp_path / "work/artifacts").iterdir()) == ["data"]
    assert not (tmp_path / "work/models").exists()
