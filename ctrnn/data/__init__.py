"""Irregular time-series datasets: series of ``(values, times, mask, label)``, a collate that
pads them into batches, a reader for UEA/UCR ``.ts`` files, the missing-data and splitting
protocol of the Neural CDE paper, the real sets (JapaneseVowels shipped with the package, any
UEA/UCR archive set from a directory or an installed aeon or sktime) and synthetic tasks, all
by name through :func:`load_dataset`."""

from ._dataset import (
    IGNORE_INDEX,
    Batch,
    DatasetSplits,
    Sample,
    TimeSeriesDataset,
    collate,
    from_arrays,
)
from .archive import ArchiveFiles, archive_datasets, find_archive
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
    "ArchiveFiles",
    "Batch",
    "DatasetSplits",
    "Sample",
    "TimeSeriesDataset",
    "add_time_channel",
    "adding_problem",
    "archive_datasets",
    "available_datasets",
    "basic_motions",
    "channel_stats",
    "collate",
    "copy_task",
    "double_circles",
    "double_moons",
    "drop_observations",
    "find_archive",
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
