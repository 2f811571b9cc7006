"""Irregular time-series datasets: series of ``(values, times, mask, label)``, a collate that
pads them into batches, a reader for UEA/UCR ``.ts`` files, the missing-data and splitting
protocol of the Neural CDE paper, the real sets (JapaneseVowels shipped with the package,
BasicMotions from an installed sktime) and synthetic tasks, all by name through
:func:`load_dataset`."""

from ._dataset import (
    IGNORE_INDEX,
    Batch,
    DatasetSplits,
    Sample,
    TimeSeriesDataset,
    collate,
    from_arrays,
)
from .datasets import available_datasets, basic_motions, japanese_vowels, load_dataset
from .protocol import (
    add_time_channel,
    channel_stats,
    drop_observations,
    make_splits,
    split_indices,
    standardize,
)
from .synthetic import (
    COPY_CLASSES,
    adding_problem,
    copy_task,
    double_circles,
    double_moons,
    planar_dataset,
    spirals,
    swiss_roll,
)
from .ts import read_ts

__all__ = [
    "COPY_CLASSES",
    "IGNORE_INDEX",
    "Batch",
    "DatasetSplits",
    "Sample",
    "TimeSeriesDataset",
    "add_time_channel",
    "adding_problem",
    "available_datasets",
    "basic_motions",
    "channel_stats",
    "collate",
    "copy_task",
    "double_circles",
    "double_moons",
    "drop_observations",
    "from_arrays",
    "japanese_vowels",
    "load_dataset",
    "make_splits",
    "planar_dataset",
    "read_ts",
    "spirals",
    "split_indices",
    "standardize",
    "swiss_roll",
]
