"""The data layer: one image loader, product datasets (Fashion-MNIST, the product-icon set, user catalogs), datasets
by name (:func:`load_dataset`), splits and leak checks."""

from ..config import ImageLimits
from .catalog import CatalogDataset, ScanReport, Skipped, class_folder, folder_classes, scan_files, scan_folder
from .fashion import (
    FASHION_MNIST_CLASSES, FASHION_MNIST_GROUPS, ArrayDataset, DatasetChecksumError, DatasetNotFoundError,
    FashionMNIST, find_fashion_mnist, load_fashion_mnist,
)
from .groups import ProductGroups, near_duplicate_pairs, pattern_groups, product_groups, shot_pattern_hint
from .icons import load_product_icons, product_icons_dir
from .images import IMG_EXTENSIONS, ImageLoadError, load_image, probe_image
from .sources import BUILTIN, Source, file_digest, fingerprint, load_dataset
from .splits import Split, hamming_min, kfold_split, near_duplicates, phash, pixel_nearest, stratified_split

__all__ = [
    "ArrayDataset", "BUILTIN", "CatalogDataset", "DatasetChecksumError", "DatasetNotFoundError", "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_GROUPS", "FashionMNIST", "IMG_EXTENSIONS", "ImageLimits", "ImageLoadError", "ScanReport", "Skipped",
    "Source", "Split", "class_folder", "file_digest", "folder_classes", "find_fashion_mnist", "fingerprint",
    "hamming_min", "load_dataset", "load_fashion_mnist", "load_image", "load_product_icons", "near_duplicates", "phash",
    "pixel_nearest", "probe_image", "product_icons_dir", "scan_files", "scan_folder", "stratified_split", "kfold_split",
    "ProductGroups", "near_duplicate_pairs", "pattern_groups", "product_groups", "shot_pattern_hint",
]
