"""The data layer: one image loader, product datasets (Fashion-MNIST, the product-icon set, user catalogs), splits."""

from .catalog import CatalogDataset, ScanReport, Skipped, scan_files, scan_folder
from .fashion import (
    FASHION_MNIST_CLASSES, FASHION_MNIST_GROUPS, ArrayDataset, DatasetChecksumError, DatasetNotFoundError,
    FashionMNIST, find_fashion_mnist, load_fashion_mnist,
)
from .icons import load_product_icons, product_icons_dir
from .images import IMG_EXTENSIONS, ImageLimits, ImageLoadError, load_image, probe_image
from .splits import Split, hamming_min, near_duplicates, phash, pixel_nearest, stratified_split

__all__ = [
    "ArrayDataset", "CatalogDataset", "DatasetChecksumError", "DatasetNotFoundError", "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_GROUPS", "FashionMNIST", "IMG_EXTENSIONS", "ImageLimits", "ImageLoadError", "ScanReport", "Skipped",
    "Split", "find_fashion_mnist", "hamming_min", "load_fashion_mnist", "load_image", "load_product_icons",
    "near_duplicates", "phash", "pixel_nearest", "probe_image", "product_icons_dir", "scan_files", "scan_folder", "stratified_split",
]
