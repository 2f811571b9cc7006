"""evaluate() and load_run(): reports against hand-computed values, files, errors."""

import json

import pytest
import torch

from ctrnn.train import TrainConfig, classification_report, evaluate, load_run, train

SPIRALS = dict(dataset="spirals", dataset_options={"n": 80, "min_length": 8, "max_length": 16})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("run")
    config = TrainConfig(**SPIRALS, model="gru", hidden_size=8, epochs=2, batch_size=16, lr=0.02)
    train(config, path)
    return path


def test_classification_report_by_hand():
    # true:      0 0 0 1 1 2
    # predicted: 0 1 0 1 1 1   (class 2 is never predicted)
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    predicted = torch.tensor([0, 1, 0, 1, 1, 1])
    logits = torch.nn.functional.one_hot(predicted, 3).float()
    report = classification_report(logits, labels, ("a", "b", "c"))
    assert report["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [0, 1, 0]]
    assert report["accuracy"] == pytest.approx(4 / 6)
    a, b, c = (report["per_class"][k] for k in "abc")
    assert (a["precision"], a["recall"], a["support"]) == (1.0, pytest.approx(2 / 3), 3)
    assert a["f1"] == pytest.approx(0.8)
    assert (b["precision"], b["recall"], b["support"]) == (0.5, 1.0, 2)
    assert b["f1"] == pytest.approx(2 / 3)
    assert (c["precision"], c["recall"], c["f1"], c["support"]) == (0.0, 0.0, 0.0, 1)
    assert report["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 3)
    assert report["macro_precision"] == pytest.approx(0.5)


def test_evaluate_writes_a_consistent_report(run_dir):
    report = evaluate(run_dir)
    on_disk = json.loads((run_dir / "evaluation.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    result = json.loads((run_dir / "result.json").read_text())
    matrix = torch.tensor(report["confusion_matrix"])
    assert int(matrix.sum()) == report["n"] == 12  # 15% of 80 series
    assert report["accuracy"] == pytest.approx(float(matrix.trace()) / report["n"])
    assert report["accuracy"] == pytest.approx(result["test_acc"])
    assert report["loss"] == pytest.approx(result["test_loss"], rel=1e-6)
    assert (
        report["classes"] == ["counter-clockwise", "clockwise"]
        and report["epoch"] == result["best_epoch"]
    )
    for name, row in zip(report["classes"], report["confusion_matrix"]):
        assert report["per_class"][name]["support"] == sum(row)
    pytest.importorskip("matplotlib")
    assert report["figure"] == str(run_dir / "confusion_matrix.png")
    assert (run_dir / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_other_splits(run_dir):
    assert evaluate(run_dir, split="val")["n"] == 12
    assert evaluate(run_dir, split="train", batch_size=7)["n"] == 56
    with pytest.raises(ValueError, match="split must be one of train, val, test, got 'dev'"):
        evaluate(run_dir, split="dev")


def test_load_run(run_dir):
    run = load_run(run_dir)
    assert not run.model.training
    assert run.config["model"] == "gru" and run.classes == ("counter-clockwise", "clockwise")
    assert len(run.splits.test) == 12 and run.splits.train.num_channels == 3
    assert [row["epoch"] for row in run.history] == [1, 2]
    best = torch.load(run_dir / "best.pt", weights_only=True)
    for key, value in run.model.state_dict().items():
        assert torch.equal(value, best["model"][key])
    assert "Run(" in repr(run) and "val_loss=" in repr(run)


def test_load_run_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"holds no run \(no best.pt\)"):
        load_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="the directory does not exist"):
        load_run(tmp_path / "missing")


def test_evaluate_regression(tmp_path):
    config = TrainConfig(
        dataset="adding",
        dataset_options={"n": 40, "length": 8},
        model="gru",
        hidden_size=4,
        epochs=1,
    )
    train(config, tmp_path)
    report = evaluate(tmp_path)
    assert report["rmse"] == pytest.approx(report["loss"] ** 0.5, rel=1e-6)
    assert 0 < report["mae"] <= report["rmse"] and report["figure"] is None
