import subprocess
import sys


def test_help_is_fast_and_does_not_import_torch():
    code = (
        "import sys; from typer.testing import CliRunner; from flows.cli import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
        "assert 'pipeline' in r.output and 'sft' in r.output; "
        "heavy = [m for m in ('torch', 'transformers', 'mlflow', 'prefect', 'dvc') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bad_params_stop_before_work(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    bad = tmp_path / "params.yaml"
    bad.write_text("tokenizer:\n  vocab: 3\n")
    result = CliRunner().invoke(app, ["tokenizer", "--params", str(bad)])
    assert result.exit_code == 2
    assert "tokenizer.vocab: unknown key" in result.output


def test_a_queued_dvc_experiment_keeps_the_projects_state(tmp_path):
    """`dvc queue start` runs an experiment in <root>/.dvc/tmp/exps/<run>/: its tracking store is the
    project's, not one thrown away with the copy."""
    from tasks.env import project_root, state_dir

    copy = tmp_path / "proj" / ".dvc" / "tmp" / "exps" / "tmp1a2b"
    copy.mkdir(parents=True)
    assert project_root(copy) == (tmp_path / "proj").resolve()
    assert project_root(tmp_path) == tmp_path.resolve()
    assert state_dir(tmp_path) == tmp_path / ".state"
