"""Every command refuses a bad argument with one line before any work, and prints what a shell can run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from nnunet_scd.cli import main
from nnunet_scd.commands import env as env_command


def test_env_line_survives_eval_with_spaces_and_shell_characters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture) -> None:
    # Regression: `export nnUNet_extTrainer=/a b/trainers` exported "/a" and ran "b/trainers".
    folder = tmp_path / "my checkouts" / "it's $HOME" / "trainers"
    monkeypatch.setattr(env_command, "trainer_shim_dir", lambda: folder)
    assert main(["env"]) == 0
    line = capsys.readouterr().out
    shown = subprocess.run(["bash", "-c", 'eval "$1"; printf %s "$nnUNet_extTrainer"', "bash", line],
                           capture_output=True, text=True, check=True).stdout
    assert shown == str(folder)


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "a\\b", ""])
def test_plan_refuses_a_plans_name_that_is_a_path(name: str, capsys: pytest.CaptureFixture) -> None:
    # Regression: --plans-name ../x wrote x.json outside the dataset's preprocessed folder.
    with pytest.raises(SystemExit) as exit_info:
        main(["plan", "-d", "17", "--plans-name", name])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--plans-name" in err and "is not a plans identifier" in err and "Traceback" not in err


@pytest.mark.parametrize("content", ['{"train_speedup": 2.0, "name": "not a bench run"}', "not json {", "[1, 2]"])
def test_bench_from_json_on_another_file_is_one_line(tmp_path: Path, content: str) -> None:
    # Regression: a KeyError (or JSONDecodeError) traceback.
    path = tmp_path / "other.json"
    path.write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--from-json", str(path)])
    message = str(exit_info.value.code)
    assert message.startswith("error: --from-json: ") and str(path) in message and len(message.splitlines()) == 1


def test_bench_from_json_reads_a_real_result() -> None:
    path = Path(__file__).parent.parent / "docs" / "bench" / "paper-btcv.json"
    assert json.loads(path.read_text())["config"]
    assert main(["bench", "--from-json", str(path)]) == 0


def test_bench_output_paths_that_cannot_be_written_are_refused_before_timing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    # Regression: the plot and JSON writes failed with a traceback after all the timing was done.
    import nnunet_scd.bench.run as bench_run

    def must_not_run(*args, **kwargs):
        raise AssertionError("the benchmark ran before the output path was checked")

    monkeypatch.setattr(bench_run, "run_benchmark", must_not_run)
    (tmp_path / "a_file").write_text("")
    unwritable = str(tmp_path / "a_file" / "out")
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--config", "tiny", "--plot", unwritable + ".png"])
    assert str(exit_info.value.code).startswith("error: --plot: cannot create") and "a_file" in str(exit_info.value)
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--config", "tiny", "--json", unwritable + ".json"])
    assert exit_info.value.code == 2 and "--json: cannot create" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--config", "tiny", "--json", str(tmp_path)])
    assert exit_info.value.code == 2 and "is a folder; give a file name" in capsys.readouterr().err


@pytest.mark.slow
def test_known_dependency_warnings_do_not_reach_the_command_output() -> None:
    import sys

    path = Path(__file__).parent.parent / "docs" / "bench" / "paper-btcv.json"
    result = subprocess.run([sys.executable, "-m", "nnunet_scd.cli", "bench", "--from-json", str(path)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "FutureWarning" not in result.stderr
