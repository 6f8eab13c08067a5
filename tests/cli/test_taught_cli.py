"""`photobot models new` / `add-label`: taught models from the command line, with the bot's rules, and
the commands that take a model name (`retrain`, `export`) know them."""

from __future__ import annotations

from pathlib import Path

import pytest

from photobot.cli import main
from photobot.settings import Settings
from photobot.wiring import taught_catalogue


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "var"))
    return tmp_path / "var"


def test_a_model_made_on_the_command_line_joins_the_catalogue(data_dir: Path, capsys) -> None:
    assert main(["models", "new", "insects", "--labels", "Ant", "bee"]) == 0
    assert "insects: a new model with the labels ant, bee" in capsys.readouterr().out
    assert main(["models", "add-label", "insects", "wasp"]) == 0
    catalogue = taught_catalogue(Settings(data_dir=data_dir))
    assert catalogue["insects"].label_names == ("ant", "bee", "wasp")
    assert catalogue["insects"].mode == "insects"

    assert main(["models", "rollback", "insects"]) != 0  # known, but no version to roll back to
    assert "unknown model" not in capsys.readouterr().err
    assert main(["export", "--model", "insects", str(data_dir / "out")]) == 0
    assert "exported 0 labelled insects photos" in capsys.readouterr().out


def test_evaluate_of_a_taught_model_before_its_first_version_says_so(data_dir: Path, capsys) -> None:
    """It printed "pets (vNone): accuracy 0.00%", every photo "no pets model is loaded", and exit 0."""
    assert main(["models", "new", "pets", "--labels", "cat", "dog"]) == 0
    (data_dir.parent / "photos" / "cat").mkdir(parents=True)
    capsys.readouterr()
    assert main(["evaluate", "--model", "pets", "--images", str(data_dir.parent / "photos")]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("photobot evaluate: no pets model is loaded: no version of it serves yet")
    assert "vNone" not in error


def test_a_model_is_named_by_its_name_or_its_mode_everywhere(data_dir: Path, capsys) -> None:
    """The names DESIGN promises: `classify --mode digits` and `export --model digit` were refused."""
    assert main(["models", "new", "pets", "--labels", "cat", "dog"]) == 0  # the database, for export
    assert main(["export", "--model", "digit", str(data_dir / "out")]) == 0
    assert "exported 0 labelled digits photos" in capsys.readouterr().out
    assert main(["models", "rollback", "flower"]) != 0  # known (no earlier version): not "unknown"
    assert "unknown model" not in capsys.readouterr().err
    (data_dir / "empty").mkdir()
    assert main(["classify", "--mode", "digits", str(data_dir / "empty")]) != 0
    assert capsys.readouterr().err.strip() == "photobot classify: no photos found in the paths given"


def test_a_model_store_folder_keeps_its_name(data_dir: Path, capsys) -> None:
    """Old versions in the model store (a model trained by hand) would start serving a new model."""
    (data_dir / "models" / "pets" / "v1").mkdir(parents=True)
    assert main(["models", "new", "pets", "--labels", "dog", "cat"]) != 0
    assert "The name “pets” is taken" in capsys.readouterr().err
    assert "pets" not in taught_catalogue(Settings(data_dir=data_dir))


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["models", "new", "Bad", "--labels", "a", "b"], "cannot be a model's name"),
        (["models", "new", "flowers", "--labels", "a", "b"], "is taken"),
        (["models", "new", "pets", "--labels", "dog"], "A model has 2 to 50 labels"),
        (["models", "add-label", "nothing", "cow"], "no taught model called 'nothing'"),
        (["retrain", "--model", "nothing"], "unknown model 'nothing'; choose from digits, flowers"),
        (["models", "promote", "nothing", "1"], "unknown model 'nothing'; choose from digits, flowers"),
        (["models", "rollback", "nothing"], "unknown model 'nothing'; choose from digits, flowers"),
        (
            ["evaluate", "--model", "nothing", "--images", "."],
            "unknown model 'nothing'; choose from digits, flowers, auto",
        ),
        (
            ["classify", "x.jpg", "--mode", "nothing"],
            "unknown mode 'nothing'; choose from auto, digit, flower",
        ),
    ],
)
def test_bad_names_labels_and_models_are_refused_with_the_reason(
    data_dir: Path, capsys, argv: list[str], says: str
) -> None:
    assert main(argv) != 0
    assert says in capsys.readouterr().err


def test_a_label_added_to_the_flowers_on_the_command_line_joins_its_catalogue_entry(
    data_dir: Path, capsys
) -> None:
    assert main(["models", "add-label", "flowers", "Lavender"]) == 0
    out = capsys.readouterr().out
    assert "flowers: labels daisy, dandelion, roses, sunflowers, tulips, lavender" in out
    assert "photobot retrain --model flowers" in out
    flowers = taught_catalogue(Settings(data_dir=data_dir))["flowers"]
    assert flowers.label_names[-1] == "lavender" and flowers.added == ("lavender",)
    for label in ("lavender", "daisy"):
        assert main(["models", "add-label", "flowers", label]) != 0
        assert f"The model already has the label “{label}”." in capsys.readouterr().err
