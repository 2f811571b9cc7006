"""read_ts: the UEA/UCR .ts reader, on small handwritten files."""

import gzip
import re

import numpy as np
import pytest
import torch

from ctrnn.data import TimeSeriesDataset, read_ts

HEADER = """# A comment line
@problemName Toy
@timeStamps false
@missing true
@univariate false
@dimensions 2
@equalLength true
@seriesLength 3
@classLabel true up down
@data
"""


def _write(tmp_path, text, name="toy.ts", compress=False):
    path = tmp_path / name
    data = text.encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def _to_ts(ds: TimeSeriesDataset) -> str:
    """Serialise a dataset in the .ts format (the writer the reader is checked against)."""
    lines = [
        f"@problemName {ds.name}",
        "@timeStamps false",
        "@missing true",
        "@univariate false",
        f"@dimensions {ds.num_channels}",
        "@equalLength false",
        "@classLabel true " + " ".join(ds.classes),
        "@data",
    ]
    for s in ds:
        dims = [
            ",".join("?" if np.isnan(v) else repr(float(v)) for v in s.values[:, c].tolist())
            for c in range(ds.num_channels)
        ]
        lines.append(":".join(dims) + ":" + ds.classes[int(s.label)])
    return "\n".join(lines) + "\n"


def test_reads_handwritten_multivariate(tmp_path):
    path = _write(tmp_path, HEADER + "1,2,3:4,?,6:down\n\n0.5,NaN,-1e2:7,8,9:up\n")
    ds = read_ts(path)
    assert ds.name == "Toy" and ds.classes == ("up", "down") and ds.labels.tolist() == [1, 0]
    assert ds.num_channels == 2 and ds.lengths == [3, 3]
    expected = torch.tensor([[1.0, 4.0], [2.0, float("nan")], [3.0, 6.0]])
    torch.testing.assert_close(ds[0].values, expected, equal_nan=True)
    torch.testing.assert_close(
        ds[1].values[:, 0], torch.tensor([0.5, float("nan"), -100.0]), equal_nan=True
    )
    torch.testing.assert_close(ds[1].times, torch.tensor([0.0, 1.0, 2.0]))
    assert ds[0].mask.tolist() == [[True, True], [True, False], [True, True]]


def test_round_trip_variable_length_gzip_and_case(tmp_path):
    rng = np.random.default_rng(0)
    values = []
    for T in (7, 3, 12, 1):
        v = rng.standard_normal((T, 3))
        v[rng.random((T, 3)) < 0.2] = np.nan
        values.append(v)
    ds = TimeSeriesDataset(values, [2, 0, 1, 2], classes=("x", "y", "z"), name="Round")
    text = _to_ts(ds).replace("@problemName", "@PROBLEMNAME").replace("@data", "@Data")
    for compress in (False, True):
        back = read_ts(_write(tmp_path, text, "r.ts.gz" if compress else "r.ts", compress))
        assert back.name == "Round" and back.classes == ds.classes and back.lengths == ds.lengths
        assert back.labels.tolist() == [2, 0, 1, 2]
        for a, b in zip(back.values, ds.values):
            torch.testing.assert_close(a, b, equal_nan=True)


def test_unequal_dimensions_padded_when_lengths_may_differ(tmp_path):
    text = "@problemName V\n@equalLength false\n@classLabel true a b\n@data\n1,2,3:4:a\n5:6,7:b\n"
    ds = read_ts(_write(tmp_path, text))
    assert ds.lengths == [3, 2]
    nan = float("nan")
    torch.testing.assert_close(
        ds[0].values, torch.tensor([[1.0, 4.0], [2.0, nan], [3.0, nan]]), equal_nan=True
    )


def test_univariate_and_regression(tmp_path):
    text = "@problemName U\n@univariate true\n@targetLabel true\n@data\n1,2:0.5\n3,4,5:-2\n"
    ds = read_ts(_write(tmp_path, text))
    assert ds.task == "regression" and ds.labels.tolist() == [0.5, -2.0]
    assert ds.num_channels == 1 and ds.lengths == [2, 3]
    # without @problemName the file's name is used
    ds = read_ts(_write(tmp_path, "@classLabel true 0 1\n@data\n1,2:1\n", name="Named.ts"))
    assert ds.name == "Named"


def _err(tmp_path, text, line, pattern, name="bad.ts"):
    path = _write(tmp_path, text, name)
    with pytest.raises(ValueError, match=re.escape(f"{path}, line {line}: ") + pattern):
        read_ts(path)


def test_malformed_data_lines(tmp_path):
    # ragged dimensions when the header says lengths must match
    _err(tmp_path, HEADER + "1,2,3:4,5:up\n", 11, r"dimensions of different lengths \[3, 2\]")
    # non-numeric values
    _err(
        tmp_path,
        HEADER + "1,2,3:4,5,6:up\n1,x7,3:4,5,6:up\n",
        12,
        "non-numeric value 'x7' in dimension 1",
    )
    # a label that @classLabel did not declare
    _err(tmp_path, HEADER + "1,2,3:4,5,6:sideways\n", 11, "class label 'sideways' is not declared")
    # wrong number of dimensions, against @dimensions, @univariate, or the first series
    _err(tmp_path, HEADER + "1,2,3:up\n", 11, r"1 dimensions, expected 2 \(@dimensions 2\)")
    uni = "@univariate true\n@classLabel true a\n@data\n1,2:3,4:a\n"
    _err(tmp_path, uni, 4, r"2 dimensions, expected 1 \(@univariate true\)")
    free = "@classLabel true a\n@data\n1:2:a\n1:2:3:a\n"
    _err(tmp_path, free, 4, r"3 dimensions, expected 2 \(the first series, line 3, has 2\)")
    # series lengths against @seriesLength and @equalLength
    _err(tmp_path, HEADER + "1,2:3,4:up\n", 11, "series of length 2, but @seriesLength is 3")
    eq = "@equalLength true\n@classLabel true a\n@data\n1,2:3,4:a\n1,2,3:4,5,6:a\n"
    _err(tmp_path, eq, 5, "series of length 3, the first series has 2")
    # timestamped data and a line without a label
    _err(tmp_path, "@classLabel true a\n@data\n(0,1),(1,2):a\n", 3, "timestamped")
    _err(tmp_path, "@classLabel true a\n@data\n1,2,3\n", 3, "expected dimensions separated by ':'")
    _err(
        tmp_path,
        "@targetLabel true\n@data\n1,2:big\n",
        3,
        "regression target 'big' is not a number",
    )


def test_malformed_headers(tmp_path):
    _err(tmp_path, "@problemName a\n@colour red\n", 2, "unknown header tag '@colour'")
    _err(tmp_path, "@missing maybe\n", 1, "@missing must be true or false, got 'maybe'")
    _err(tmp_path, "@dimensions two\n", 1, "@dimensions must be a positive integer, got 'two'")
    _err(tmp_path, "@classLabel true\n", 1, "@classLabel true must list the class labels")
    _err(tmp_path, "@classLabel true a b a\n", 1, "@classLabel lists a label twice")
    _err(
        tmp_path, "hello\n@data\n", 1, "expected a header tag or a '#' or '%' comment, got 'hello'"
    )
    _err(tmp_path, "@timeStamps true\n@classLabel true a\n@data\n", 3, "@timeStamps true")
    _err(tmp_path, "@classLabel false\n@data\n1,2\n", 2, "the series have no labels")
    _err(tmp_path, "@classLabel true a\n@targetLabel true\n@data\n", 3, "both @classLabel")
    _err(
        tmp_path,
        "@univariate true\n@dimensions 2\n@classLabel true a\n@data\n",
        4,
        "@univariate true but @dimensions 2",
    )
    _err(tmp_path, "@classLabel true a\n@data\n", 2, "no series after @data")


def test_unreadable_files(tmp_path):
    path = _write(tmp_path, "@classLabel true a\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}: no @data line")):
        read_ts(path)
    path = tmp_path / "broken.ts.gz"
    path.write_bytes(gzip.compress(b"@data\n")[:12])
    with pytest.raises(ValueError, match="not a valid gzip file"):
        read_ts(path)
    path = tmp_path / "latin.ts"
    path.write_bytes(b"@problemName caf\xe9\n")
    with pytest.raises(ValueError, match="not UTF-8 text"):
        read_ts(path)
