"""What a volume file's own header says, read before ITK gets to "fix" it.

ITK reads some broken files without an error, and a patient volume read wrongly without an
error is the worst failure a tool like this can have:

* a NIfTI file cut short (a copy interrupted, a full disk) is read with the missing voxels as
  zeros (NRRD and MetaImage readers refuse such files themselves);
* a NIfTI ``pixdim`` of zero is replaced by 1 mm after a warning, and a negative one is taken
  as positive; MetaImage and NRRD headers can carry zero or negative spacings too.

So these few header fields are parsed here, by hand (a few fixed offsets of the NIfTI-1/-2
layout and the ``key: value`` text headers of NRRD and MetaImage), and checked first.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

#: NIfTI ``datatype`` -> bytes per voxel, for the types ITK reads.
_NIFTI_BYTES = {
    2: 1,
    4: 2,
    8: 4,
    16: 4,
    32: 8,
    64: 8,
    128: 3,
    256: 1,
    512: 2,
    768: 4,
    1024: 8,
    1280: 8,
    1536: 16,
    1792: 16,
    2048: 32,
    2304: 4,
}


@dataclass
class NiftiTransforms:
    """A NIfTI header's two orientations: qform (quaternion, ``pixdim`` spacing) and sform.

    ``qform`` and ``sform`` are 3x4 matrices ``[axes * spacing | origin]`` (RAS, as stored)."""

    qform_code: int
    sform_code: int
    qform: tuple[tuple[float, ...], ...]
    sform: tuple[tuple[float, ...], ...]


@dataclass
class HeaderFacts:
    """The header fields CLADE checks: spacing per index axis and data bytes expected/present."""

    spacing: tuple[float | None, ...] | None = None
    spacing_field: str = "spacing"
    expected_bytes: int | None = None
    present_bytes: int | None = None
    #: The origin as written (NaN kept), and the field it came from.
    origin: tuple[float, ...] | None = None
    origin_field: str = "origin"
    #: NRRD/MetaImage: the direction matrix as written (rows of numbers), degenerate ones kept.
    directions: tuple[tuple[float, ...], ...] | None = None
    #: NIfTI only: 1 or 2, the datatype code, where the voxels start, whether gzip-compressed,
    #: the byte order, and the qform and sform (see :class:`NiftiTransforms`).
    nifti_version: int | None = None
    datatype: int | None = None
    data_offset: int | None = None
    compressed: bool = False
    endian: str = "<"
    transforms: NiftiTransforms | None = None

    @property
    def truncated(self) -> bool:
        return (
            self.expected_bytes is not None
            and self.present_bytes is not None
            and self.present_bytes < self.expected_bytes
        )


def read_header_facts(path: str | os.PathLike) -> HeaderFacts:
    """The facts of ``path``'s header (empty for formats and layouts not checked here).

    For NIfTI the data length is measured too (for ``.nii.gz`` by decompressing, stopping as
    soon as enough bytes came out).

    Example:
        >>> import SimpleITK as sitk, tempfile
        >>> name = os.path.join(tempfile.mkdtemp(), "v.nii")
        >>> image = sitk.Image([4, 4, 3], sitk.sitkInt16); image.SetSpacing((1.0, 1.0, 5.0))
        >>> sitk.WriteImage(image, name)
        >>> facts = read_header_facts(name)
        >>> facts.spacing, facts.expected_bytes - facts.present_bytes
        ((1.0, 1.0, 5.0), 0)
    """
    name = str(path).lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            return _nifti_facts(Path(path))
        if name.endswith((".nrrd", ".nhdr")):
            return _nrrd_facts(Path(path))
        if name.endswith((".mha", ".mhd")):
            return _meta_facts(Path(path))
    except (OSError, EOFError, zlib.error, struct.error, ValueError, UnicodeDecodeError):
        # Not readable as that format at all: ITK's reader gives the verdict.
        return HeaderFacts()
    return HeaderFacts()


def is_gzip(path: str | os.PathLike) -> bool:
    """True when the file starts with gzip's magic bytes, whatever its name says.

    Example:
        >>> import tempfile
        >>> name = os.path.join(tempfile.mkdtemp(), "plain.nii.gz")
        >>> _ = open(name, "wb").write(b"not compressed")
        >>> is_gzip(name)
        False
    """
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _open(path: Path):
    # By content, not by name: an uncompressed NIfTI named .nii.gz is read by ITK all the same.
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def _nifti_facts(path: Path) -> HeaderFacts:
    with _open(path) as handle:
        head = handle.read(540)
        for endian in "<>":
            (size,) = struct.unpack_from(endian + "i", head, 0)
            if size in (348, 540):
                break
        else:
            return HeaderFacts()
        if size == 348:
            dims = struct.unpack_from(endian + "8h", head, 40)
            (datatype,) = struct.unpack_from(endian + "h", head, 70)
            pixdim = struct.unpack_from(endian + "8f", head, 76)
            (offset,) = struct.unpack_from(endian + "f", head, 108)
            magic = head[344:348]
            single_file = magic == b"n+1\x00"
            transforms = _nifti1_transforms(head, endian, pixdim)
        else:
            (datatype,) = struct.unpack_from(endian + "h", head, 12)
            dims = struct.unpack_from(endian + "8q", head, 16)
            pixdim = struct.unpack_from(endian + "8d", head, 104)
            (offset,) = struct.unpack_from(endian + "q", head, 168)
            single_file = head[4:8] == b"n+2\x00"
            transforms = None
        ndim = int(dims[0])
        if not 1 <= ndim <= 7:
            return HeaderFacts()
        spatial = min(ndim, 3)
        # A length-1 axis (a single slice) has no spacing that matters: not checked (None).
        facts = HeaderFacts(
            spacing=tuple(
                float(v) if int(n) > 1 else None
                for v, n in zip(pixdim[1 : 1 + spatial], dims[1 : 1 + spatial])
            ),
            spacing_field="pixdim",
            nifti_version=1 if size == 348 else 2,
            datatype=int(datatype),
            data_offset=max(int(offset), size),
            compressed=is_gzip(path),
            endian=endian,
            transforms=transforms,
        )
        if transforms is not None:
            facts.origin = tuple(row[3] for row in transforms.sform)
            if transforms.sform_code <= 0:
                facts.origin = tuple(row[3] for row in transforms.qform)
            facts.origin_field = "sform" if transforms.sform_code > 0 else "qoffset"
        if not single_file or datatype not in _NIFTI_BYTES:
            return facts  # a .hdr/.img pair or a type ITK refuses: nothing more to measure
        voxels = math.prod(max(1, int(d)) for d in dims[1 : 1 + ndim])
        # ITK (niftilib) reads the voxels from max(vox_offset, header size).
        start = max(int(offset), size)
        facts.expected_bytes = start + voxels * _NIFTI_BYTES[datatype]
        if facts.compressed:
            facts.present_bytes = len(head) + _count(handle, facts.expected_bytes - len(head))
        else:
            facts.present_bytes = os.path.getsize(path)
        return facts


def _nifti1_transforms(head: bytes, endian: str, pixdim) -> NiftiTransforms:
    qform_code, sform_code = struct.unpack_from(endian + "2h", head, 252)
    b, c, d, *offset = struct.unpack_from(endian + "6f", head, 256)
    rows = struct.unpack_from(endian + "12f", head, 280)
    a = math.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d)))
    rotation = (
        (a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)),
        (2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)),
        (2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b),
    )
    qfac = -1.0 if pixdim[0] < 0 else 1.0
    scale = (abs(pixdim[1]), abs(pixdim[2]), abs(pixdim[3]) * qfac)
    qform = tuple(
        tuple(rotation[r][k] * scale[k] for k in range(3)) + (offset[r],) for r in range(3)
    )
    sform = tuple(tuple(rows[4 * r : 4 * r + 4]) for r in range(3))
    return NiftiTransforms(int(qform_code), int(sform_code), qform, sform)


def _count(handle, wanted: int, chunk: int = 1 << 22) -> int:
    """Bytes readable from ``handle``, stopping once ``wanted`` is reached."""
    total = 0
    try:
        while total < wanted:
            block = handle.read(min(chunk, wanted - total))
            if not block:
                break
            total += len(block)
    except EOFError:  # a gzip stream cut short: what came out before is what there is
        pass
    return total


def _text_header(path: Path, limit: int = 1 << 16) -> list[str]:
    with open(path, "rb") as handle:
        raw = handle.read(limit)
    end = raw.find(b"\n\n") if path.suffix.lower() in (".nrrd", ".mha") else -1
    text = raw[: end if end >= 0 else len(raw)].decode("latin-1")
    return text.splitlines()


def _numbers(text: str) -> list[float]:
    pattern = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?nan|[-+]?inf"
    return [float(v) for v in re.findall(pattern, text, re.IGNORECASE)]


def _nrrd_fields(path: Path) -> tuple[dict[str, str], list[str]] | None:
    """The ``key: value`` fields of a NRRD header and the lines after ``data file: LIST``."""
    lines = _text_header(path)
    if not lines or not lines[0].startswith("NRRD"):
        return None
    fields: dict[str, str] = {}
    for index, line in enumerate(lines[1:], start=1):
        if line.startswith("#") or ":" not in line or ":=" in line:
            continue
        key, value = line.split(":", 1)
        key = key.strip().lower().replace("datafile", "data file")
        fields[key] = value.strip()
        if key == "data file":
            return fields, [n.strip() for n in lines[index + 1 :] if n.strip()]
    return fields, []


def _nrrd_facts(path: Path) -> HeaderFacts:
    parsed = _nrrd_fields(path)
    if parsed is None:
        return HeaderFacts()
    fields = parsed[0]
    facts = HeaderFacts()
    if "space origin" in fields:
        facts.origin, facts.origin_field = tuple(_numbers(fields["space origin"])), "space origin"
    if "space directions" in fields:
        # One vector per axis, "none" for a non-spatial one (a vector's length is the spacing).
        vectors = [v for v in re.findall(r"\([^)]*\)|none", fields["space directions"])]
        axes = [tuple(_numbers(v)) for v in vectors if v != "none"]
        facts.spacing = tuple(math.hypot(*axis) for axis in axes)
        facts.spacing_field = "space directions"
        facts.directions = tuple(axes)
    elif "spacings" in fields:
        values = [
            v for v in fields["spacings"].split() if v.lower() != "nan"
        ]  # nan marks a non-spatial axis
        facts.spacing = tuple(float(v) for v in values)
        facts.spacing_field = "spacings"
    return facts


def _meta_fields(path: Path) -> tuple[dict[str, str], list[str]]:
    """The ``Key = Value`` fields of a MetaImage header and the lines after
    ``ElementDataFile`` (the file list of ``ElementDataFile = LIST``)."""
    fields: dict[str, str] = {}
    lines = _text_header(path)
    for index, line in enumerate(lines):
        if "=" not in line:
            continue
        key, value = line.split("=", 1)
        fields[key.strip().lower()] = value.strip()
        if key.strip().lower() == "elementdatafile":
            return fields, [n.strip() for n in lines[index + 1 :] if n.strip()]
    return fields, []


def _meta_facts(path: Path) -> HeaderFacts:
    fields, _ = _meta_fields(path)
    if "objecttype" not in fields and "ndims" not in fields:
        return HeaderFacts()
    facts = HeaderFacts()
    if "elementspacing" in fields:
        facts.spacing = tuple(_numbers(fields["elementspacing"]))
        facts.spacing_field = "ElementSpacing"
    for key, name in (("offset", "Offset"), ("origin", "Origin"), ("position", "Position")):
        if key in fields:
            facts.origin, facts.origin_field = tuple(_numbers(fields[key])), name
            break
    for key in ("transformmatrix", "rotation", "orientation"):
        if key in fields:
            values = _numbers(fields[key])
            n = math.isqrt(len(values))
            if n * n == len(values) and n:
                facts.directions = tuple(tuple(values[i * n : i * n + n]) for i in range(n))
            break
    return facts


def data_file_names(path: str | os.PathLike) -> list[str]:
    """The data files a detached header (``.nhdr``, ``.mhd``) names, relative to its folder.

    Handles a single name, ``LIST`` and the ``pattern min max step`` form of both formats;
    empty for attached headers and other formats.

    Example:
        >>> import tempfile
        >>> name = os.path.join(tempfile.mkdtemp(), "fixed.nhdr")
        >>> _ = open(name, "w").write("NRRD0004\\ntype: short\\ndata file: scan.raw.gz\\n")
        >>> data_file_names(name)
        ['scan.raw.gz']
    """
    path = Path(path)
    ending = path.suffix.lower()
    try:
        if ending == ".nhdr":
            parsed = _nrrd_fields(path)
            value, listed = (parsed[0].get("data file"), parsed[1]) if parsed else (None, [])
        elif ending == ".mhd":
            fields, listed = _meta_fields(path)
            value = fields.get("elementdatafile")
        else:
            return []
    except (OSError, UnicodeDecodeError):
        return []
    if not value or value.upper() == "LOCAL":
        return []
    words = value.split()
    if words[0].upper() == "LIST":
        return listed
    if len(words) >= 4 and "%" in words[0]:
        try:
            first, last, step = (int(w) for w in words[1:4])
            numbers = range(first, last + (1 if step > 0 else -1), step) if step else [first]
            return [words[0] % n for n in numbers][:100000]
        except (ValueError, TypeError):
            return []
    return [value]
