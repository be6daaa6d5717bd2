"""Datasets: one :class:`ImageData` type and a registry of loaders (``load_dataset("cifar10", "test")``)."""

from classwise.data.base import ImageData, to_float
from classwise.data.datasets import (
    DATASETS,
    DatasetSpec,
    dataset_info,
    load_dataset,
    locate_dataset,
)
from classwise.data.places import default_data_root
from classwise.data.selection import select_subset

__all__ = ["DATASETS", "DatasetSpec", "ImageData", "dataset_info", "default_data_root", "load_dataset", "locate_dataset",
           "select_subset", "to_float"]
