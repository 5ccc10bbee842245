"""workflow.sync's DVC recording on its own: the stages it is given land in dvc.lock, byte for byte as DVC's
own `dvc commit` writes them, in a DVC repository with Git and in one without (dvc init --no-scm)."""
import pytest
import yaml

from conftest import sh
from workflow import sync

# long commands (wrapped lines), a null parameter, nested params and a directory output: what dvc.lock holds
DVC_YAML = {"stages": {
    "make-a": {"cmd": "python -c \"open('a.txt', 'w').write('a')\" --a-long-argument-that-wraps "
                      "--and-another-one results/some/deep/path/to/an/output",
               "params": ["train.lr", "train.random_resized_crop"], "outs": ["a.txt"]},
    "make-b": {"cmd": "mkdir -p b && cp a.txt b/", "deps": ["a.txt"], "params": ["seeds"], "outs": ["b"]}}}
PARAMS = {"seeds": [0, 1], "train": {"lr": 0.0045, "random_resized_crop": None, "epochs": 6}}


@pytest.mark.parametrize("scm", ["git", "no-scm"])
def test_recorded_lockfile_is_what_dvc_writes(tmp_path, monkeypatch, scm):
    if scm == "git":
        sh(tmp_path, "git", "init", "-q")
    sh(tmp_path, "dvc", "init", "-q", *(["--no-scm"] if scm == "no-scm" else []))
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "a.txt").write_text("a")

    monkeypatch.chdir(tmp_path)
    sync.dvc_commit(["make-a"])
    sync.dvc_commit(["make-b"])  # an existing dvc.lock keeps its other stages
    ours = (tmp_path / "dvc.lock").read_text()
    assert set(yaml.safe_load(ours)["stages"]) == {"make-a", "make-b"}
    assert sh(tmp_path, "dvc", "status", "--json").stdout.strip() == "{}"

    (tmp_path / "dvc.lock").unlink()
    sh(tmp_path, "dvc", "commit", "--force", "make-a", "make-b")
    assert ours == (tmp_path / "dvc.lock").read_text()
