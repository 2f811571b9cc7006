"""benchmarks/sequence.py at tiny sizes: every model and torch.nn.GRU get a row, and only the
"## Sequence models" section of the output file is written."""

import importlib.util
import re
from pathlib import Path

import pytest

import ctrnn.models as M

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "sequence.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("sequence_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(text):
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(
            r"^\| (\S+) \| [^|]+ \| \d+ \| [\d.]+ \| [\d.]+ \| ([\d.]+) \|$", text, re.M
        )
    }


def test_quick_run_measures_every_model_and_writes_only_its_section(bench, tmp_path, capsys):
    out = tmp_path / "benchmarks.md"
    out.write_text(
        "# Benchmarks\n\nintro\n\n## CPU\n\nkept\n\n## Sequence models\n\nold\n\n## GPU\n\ng\n"
    )
    assert bench.main(["--quick", "--length", "4", "--repeats", "1", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n\n## CPU\n\nkept\n\n## Sequence models\n")
    assert text.rstrip().endswith("## GPU\n\ng") and "old" not in text
    assert text.count("## Sequence models") == 1
    rows = _rows(text)
    assert set(rows) == {"torch.nn.GRU", *M.available()}
    assert rows["torch.nn.GRU"] == 1.0 and all(r > 0 for r in rows.values())
    assert "Machine: " in text and "1 torch thread" in text
    assert "## Sequence models" in capsys.readouterr().out


def test_section_is_added_when_missing_and_unknown_models_are_refused(bench, tmp_path):
    out = tmp_path / "b.md"
    out.write_text("# Benchmarks\n")
    assert bench.main(["--quick", "--models", "gru", "--repeats", "1", "--out", str(out)]) == 0
    assert out.read_text().startswith("# Benchmarks\n\n## Sequence models\n\n")
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--models", "nope"])
