"""The sample volume shipped with the CLADE core, registered with Slicer's Sample Data module.

The file is ``CLADE/sample_data/pelvis_t2_thick.nii.gz`` inside the installed core package, so
its location follows the core (see ``CoreLocator``) rather than the module folder. Sample Data
copies it into its cache through a ``file://`` URI, like any download.
"""

from __future__ import annotations

from pathlib import Path

SAMPLE_CATEGORY = "CLADE"
SAMPLE_NAME = "CLADEPelvisT2Thick"
SAMPLE_FILE = "pelvis_t2_thick.nii.gz"
SAMPLE_RELATIVE_PATH = Path("sample_data") / SAMPLE_FILE
THUMBNAIL_FILE = "CLADEPelvisT2Thick.png"
#: SHA-256 of the sample file: Sample Data checks the copy it makes against it (a test checks
#: it against the file in the repository).
SAMPLE_SHA256 = "fd5308db92019c9a6a2be8b4c8c2d98c4f62b76fe62ffbfdd43b88b9a8ff16b1"


def samplePath(coreDir) -> Path:
    """Where the sample volume lives inside the core package folder ``coreDir``."""
    return Path(coreDir) / SAMPLE_RELATIVE_PATH


def sampleDataSourceArguments(coreDir, iconsDir) -> dict | None:
    """Keyword arguments for ``SampleDataLogic.registerCustomSampleDataSource``, or None when
    the sample file is not installed."""
    path = samplePath(coreDir)
    if not path.is_file():
        return None
    return {
        "category": SAMPLE_CATEGORY,
        "sampleName": SAMPLE_NAME,
        "uris": path.resolve().as_uri(),
        "fileNames": SAMPLE_FILE,
        "nodeNames": SAMPLE_NAME,
        "thumbnailFileName": str(Path(iconsDir) / THUMBNAIL_FILE),
        "loadFileTypes": "VolumeFile",
        "checksums": f"SHA256:{SAMPLE_SHA256}",
    }


def registerSampleData(iconsDir) -> None:
    """Add the sample to Slicer's Sample Data module (nothing when the core or file is missing)."""
    import logging

    import SampleData

    from . import CoreLocator

    try:
        coreDir = CoreLocator.coreDir()
    except RuntimeError as error:
        logging.warning(str(error))
        return
    arguments = sampleDataSourceArguments(coreDir, iconsDir)
    if arguments is not None:
        SampleData.SampleDataLogic.registerCustomSampleDataSource(**arguments)
