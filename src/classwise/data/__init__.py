"""Datasets: one :class:`ImageData` type and a registry of loaders (``load_dataset("cifar10", "test")``)."""

from classwise.data.base import ImageData, to_float
from classwise.data.datasets import (
    DATASETS,
    DatasetSpec,
    dataset_info,
    default_data_root,
    load_dataset,
    locate_dataset,
)

__all__ = ["DATASETS", "DatasetSpec", "ImageData", "dataset_info", "default_data_root", "load_dataset", "locate_dataset",
           "to_float"]
