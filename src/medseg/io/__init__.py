"""Reading and writing images with their geometry; datasets in the nnU-Net v2 layout."""

from medseg.io.dataset import Case, CaseFiles, DatasetInfo, find_cases, read_case, read_dataset_info
from medseg.io.image import Image, geometry_differences, read_image, write_image

__all__ = [
    "Case", "CaseFiles", "DatasetInfo", "Image", "find_cases", "geometry_differences",
    "read_case", "read_dataset_info", "read_image", "write_image",
]
