"""Synthetic abdominal-CT-like phantoms written as an nnU-Net v2 raw dataset.

Each case is an axial stack of a torso: air around an elliptic body with subcutaneous fat and an
abdominal muscle wall, a vertebra with paraspinal muscles, fat/bowel clutter inside, and labelled
organs (label order follows BTCV with its gaps removed). Organs are ellipsoids deformed by smooth
random fields, placed at random within plausible anatomy. Intensities are HU-like; the image is
blurred in physical units (partial volume, thick slices) and gets Gaussian noise.

Array order is numpy's (z, y, x); SimpleITK spacing order is (x, y, z). The image axes follow
SimpleITK's default LPS frame: x grows to the patient's left, y to posterior, z to superior.
Everything is vectorised and driven by one ``numpy.random.Generator`` per case, so a seed gives
byte-identical arrays.

Sizes scale with the image, not with a real patient: at the default 96 x 96 voxels of 0.8 mm the
field of view is about 77 mm, so the torso is a miniature with realistic proportions and spacing.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk  # noqa: N813
from tqdm import tqdm

from nnunet_scd.atomic import folder_lock
from nnunet_scd.datasets.raw import (
    FILE_ENDING,
    MIN_TRAINING_CASES,
    dataset_folder,
    write_dataset_json,
    write_images_atomic,
    write_text_atomic,
)

# Per-axis factors (min, max) a case's size varies by around the nominal shape (_sample_geometry).
_SIZE_SPREAD = ((0.85, 1.15), (0.9, 1.1), (0.9, 1.1))
# Peak memory of generate_phantom per voxel (float32 fields, masks, the blur), measured with tracemalloc
# at about 40-56 bytes and rounded up for SimpleITK's copies when the case is written.
_PEAK_BYTES_PER_VOXEL = 64
# Bump when the generator's output changes, so cached datasets from older code are not reused.
GENERATOR_VERSION = 1

# (name, label, mean HU). Contrast-enhanced portal-venous phase values, roughly.
ORGANS: tuple[tuple[str, int, float], ...] = (
    ("spleen", 1, 120.0),
    ("right_kidney", 2, 170.0),
    ("left_kidney", 3, 170.0),
    ("gallbladder", 4, 10.0),
    ("liver", 5, 105.0),
    ("stomach", 6, 35.0),
    ("aorta", 7, 190.0),
)
LABELS: dict[str, int] = {"background": 0, **{name: label for name, label, _ in ORGANS}}
ORGAN_HU: dict[str, float] = {name: hu for name, _, hu in ORGANS}
# Where ``organ_contrast`` pulls every organ's mean: their average, a soft-tissue value.
COMMON_ORGAN_HU = float(np.mean(list(ORGAN_HU.values())))

AIR_HU, FAT_HU, MUSCLE_HU, BOWEL_HU = -1000.0, -100.0, 50.0, 25.0
BONE_HU, CORTEX_HU, IVC_HU = 300.0, 700.0, 120.0
NOISE_HU = 12.0
# Partial-volume blur, in mm (x, y, z): thick slices smear most along z.
BLUR_MM = (0.5, 0.5, 1.2)


@dataclass(frozen=True)
class Phantom:
    """One generated case: ``image`` int16 HU and ``label`` uint8, both (z, y, x); spacing (x, y, z) mm."""

    image: np.ndarray
    label: np.ndarray
    spacing_xyz: tuple[float, float, float]

    @property
    def foreground_fraction(self) -> float:
        return float(np.count_nonzero(self.label)) / self.label.size


def _smooth_field(rng: np.random.Generator, coords: tuple[np.ndarray, ...], terms: int,
                  freq: tuple[float, float], amplitude: float) -> np.ndarray:
    """A sum of ``terms`` random plane waves over broadcastable ``coords``: smooth, cheap, seeded.

    Its absolute value never exceeds ``amplitude``.
    """
    out = np.float32(0.0)
    for _ in range(terms):
        direction = rng.normal(size=len(coords))
        direction *= rng.uniform(*freq) / np.linalg.norm(direction)
        phase = rng.uniform(0.0, 2.0 * np.pi)
        weight = rng.uniform(0.5, 1.0)
        arg = sum(np.float32(w) * c for w, c in zip(direction, coords, strict=True)) + np.float32(phase)
        out = out + np.float32(weight) * np.sin(arg, dtype=np.float32)
    return np.float32(amplitude / terms) * out


def _span(axis: np.ndarray, centre: float, extent: float) -> slice:
    """Index range of the 1-D coordinate ``axis`` within ``centre +- extent`` (possibly empty)."""
    inside = np.flatnonzero(np.abs(axis.ravel() - centre) <= extent)
    return slice(int(inside[0]), int(inside[-1]) + 1) if inside.size else slice(0, 0)


def _blob(rng: np.random.Generator, grid: tuple[np.ndarray, np.ndarray, np.ndarray], center: np.ndarray,
          radii: np.ndarray, angle: float, wobble: float = 0.15) -> np.ndarray:
    """Ellipsoid (radii in mm, x/y/z) rotated by ``angle`` in the axial plane, deformed by a smooth field.

    Only the bounding box is evaluated, which keeps large volumes cheap.
    """
    gx, gy, gz = grid
    mask = np.zeros((gz.size, gy.size, gx.size), dtype=bool)
    reach = 1.0 + wobble
    box = (_span(gz, center[2], radii[2] * reach), _span(gy, center[1], max(radii[:2]) * reach),
           _span(gx, center[0], max(radii[:2]) * reach))
    x, y, z = gx[..., box[2]] - center[0], gy[:, box[1]] - center[1], gz[box[0]] - center[2]
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u = (cos * x + sin * y) / np.float32(radii[0])
    v = (-sin * x + cos * y) / np.float32(radii[1])
    w = z / np.float32(radii[2])
    # Draw the field even for an empty box, so the random stream (and every later case) stays fixed.
    field = _smooth_field(rng, (u, v, w), terms=4, freq=(1.0, 2.5), amplitude=wobble)
    mask[box] = np.sqrt(u * u + v * v + w * w) < 1.0 + field
    return mask


def _sample_geometry(
    rng: np.random.Generator, shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Per-case image size (z, y, x) around the nominal one and spacing (x, y, z) around the nominal one."""
    nz, ny, nx = shape
    size = (
        max(8, int(round(nz * rng.uniform(*_SIZE_SPREAD[0])))),
        max(16, int(round(ny * rng.uniform(*_SIZE_SPREAD[1])))),
        max(16, int(round(nx * rng.uniform(*_SIZE_SPREAD[2])))),
    )
    inplane = spacing[0] * rng.uniform(0.9, 1.1)
    return size, (inplane, inplane, spacing[2] * rng.choice([0.8, 1.0, 1.0, 1.2]))


def organ_hu(name: str, organ_contrast: float = 1.0) -> float:
    """An organ's mean HU, pulled towards ``COMMON_ORGAN_HU``: 1 keeps ``ORGAN_HU``, 0 gives every organ the same."""
    return COMMON_ORGAN_HU + organ_contrast * (ORGAN_HU[name] - COMMON_ORGAN_HU)


def generate_phantom(rng: np.random.Generator, shape: tuple[int, int, int] = (48, 96, 96),
                     spacing_xyz: tuple[float, float, float] = (0.8, 0.8, 2.5),
                     organ_contrast: float = 1.0) -> Phantom:
    """Generate one case; ``shape`` (z, y, x) and ``spacing_xyz`` are nominal and vary per case.

    ``organ_contrast`` in [0, 1] scales how far the organs' mean intensities lie apart (``organ_hu``).
    Below 1, organs that look alike must be told apart by where they are and what surrounds them,
    as liver and spleen, or aorta and vena cava, must be in real CT. The anatomy and the random
    stream do not depend on it.
    """
    if not 0.0 <= organ_contrast <= 1.0:
        raise ValueError(f"organ_contrast must be in [0, 1] (1: the standard intensities), got {organ_contrast}")
    size, spacing = _sample_geometry(rng, shape, spacing_xyz)
    nz, ny, nx = size
    # Physical coordinates in mm, centred in-plane; z runs 0..1 (inferior -> superior) as ``t``.
    x = ((np.arange(nx, dtype=np.float32) - (nx - 1) / 2) * spacing[0])[None, None, :]
    y = ((np.arange(ny, dtype=np.float32) - (ny - 1) / 2) * spacing[1])[None, :, None]
    z = (np.arange(nz, dtype=np.float32) * spacing[2])[:, None, None]
    t = z / max(z.max(), 1e-6)
    grid = (x, y, z)
    half_x, half_y = nx * spacing[0] / 2, ny * spacing[1] / 2

    # Body: an ellipse per slice that breathes slowly along z, with a wavy outline.
    ax = half_x * rng.uniform(0.78, 0.9) * (1.0 + 0.04 * np.sin(2 * np.pi * t + rng.uniform(0, 6.3)))
    ay = min(half_y * 0.9, float(ax.mean()) * rng.uniform(0.68, 0.8)) * np.ones_like(t)
    cy = half_y * rng.uniform(-0.05, 0.05)
    rho = np.sqrt((x / ax) ** 2 + ((y - cy) / ay) ** 2)
    phi = np.arctan2(y - cy, x)
    rho = rho / (1.0 + _smooth_field(rng, (np.cos(phi), np.sin(phi), t), terms=3, freq=(1.0, 3.0),
                                     amplitude=0.04))
    fat_depth, wall_depth = rng.uniform(0.08, 0.14), rng.uniform(0.05, 0.07)
    body = rho < 1.0
    inner = rho < 1.0 - fat_depth - wall_depth
    wall = (rho < 1.0 - fat_depth) & ~inner

    hu = np.full(size, AIR_HU, dtype=np.float32)
    hu[body] = FAT_HU
    hu[wall] = MUSCLE_HU
    # Visceral clutter: bowel loops in fat, from a higher-frequency field thresholded near zero.
    bowel = _smooth_field(rng, (x / 2.5, y / 2.5, z / 5.0), terms=6, freq=(0.6, 1.2), amplitude=1.0) > -0.1
    hu[inner] = np.where(bowel, BOWEL_HU, FAT_HU)[inner]

    unit = float(ax.mean())  # organ sizes and offsets scale with the body

    def mm(fx: float, fy: float, fz: float) -> np.ndarray:
        # A point given as fractions of the body size (x, y) and of the stack height (z).
        return np.array([fx * unit, cy + fy * unit, fz * z.max()], dtype=np.float32)

    def jitter(spread: float = 0.05) -> float:
        return rng.uniform(-spread, spread)

    # Spine and paraspinal muscles (not labelled): organs must not cover them.
    spine_c = mm(0.0, float(ay.mean()) / unit * 0.62, 0.5)
    spine_r = 0.16 * unit
    spine_d = np.broadcast_to(np.sqrt((x - spine_c[0]) ** 2 + (y - spine_c[1]) ** 2) / spine_r, size)
    paraspinal = np.zeros(size, dtype=bool)
    for side in (-1, 1):
        paraspinal |= (((x - side * 0.28 * unit) / (0.17 * unit)) ** 2
                       + ((y - spine_c[1] - 0.12 * unit) / (0.13 * unit)) ** 2 < 1.0) & body
    hu[paraspinal] = MUSCLE_HU
    hu[spine_d < 1.0] = CORTEX_HU
    hu[spine_d < 0.75] = BONE_HU
    allowed = inner & ~paraspinal & (spine_d > 1.15)

    label = np.zeros(size, dtype=np.uint8)
    texture = _smooth_field(rng, (x / 4.0, y / 4.0, z / 6.0), terms=5, freq=(0.5, 1.5), amplitude=8.0)

    def paint(name: str, mask: np.ndarray) -> None:
        mask = mask & allowed
        label[mask] = LABELS[name]
        hu[mask] = (organ_hu(name, organ_contrast) + rng.normal(0.0, 8.0) + texture)[mask]

    # Largest first; later (smaller) organs win overlaps, so every small organ survives.
    # Liver: a right lobe plus a smaller left lobe reaching across the midline, upper abdomen.
    right_lobe = _blob(rng, grid, mm(-0.42 + jitter(), -0.05 + jitter(), 0.7 + jitter(0.08)),
                       np.array([0.33, 0.45, 0.36 * z.max() / unit]) * unit * rng.uniform(0.9, 1.1),
                       jitter(0.3))
    left_lobe = _blob(rng, grid, mm(0.05 + jitter(), -0.3 + jitter(), 0.8 + jitter(0.06)),
                      np.array([0.28, 0.14, 0.18 * z.max() / unit]) * unit * rng.uniform(0.85, 1.1),
                      jitter(0.4))
    paint("liver", right_lobe | left_lobe)
    # Inferior vena cava (not labelled): right of the spine, a distractor for the aorta.
    ivc = np.broadcast_to(((x - spine_c[0] + 0.2 * unit) ** 2 + (y - spine_c[1] + 0.28 * unit) ** 2)
                          < (0.07 * unit) ** 2, size)
    hu[ivc & allowed & (label == 0)] = IVC_HU
    paint("stomach", _blob(rng, grid, mm(0.3 + jitter(), -0.25 + jitter(), 0.72 + jitter(0.08)),
                           np.array([0.26, 0.18, 0.22 * z.max() / unit]) * unit * rng.uniform(0.85, 1.15),
                           rng.uniform(-0.9, -0.3)))
    paint("spleen", _blob(rng, grid, mm(0.6 + jitter(), 0.25 + jitter(), 0.72 + jitter(0.08)),
                          np.array([0.14, 0.27, 0.2 * z.max() / unit]) * unit * rng.uniform(0.85, 1.15),
                          rng.uniform(-1.0, -0.5)))
    for name, side, height in (("right_kidney", -1, 0.35), ("left_kidney", 1, 0.42)):
        centre = mm(side * (0.42 + jitter(0.04)), 0.42 + jitter(0.04), height + jitter(0.06))
        radii = np.array([0.13, 0.18, 0.22 * z.max() / unit]) * unit * rng.uniform(0.85, 1.15)
        kidney = _blob(rng, grid, centre, radii, side * rng.uniform(0.3, 0.6), wobble=0.08)
        hilum = ((x - centre[0] + side * 0.11 * unit) ** 2 + (y - centre[1]) ** 2) < (0.05 * unit) ** 2
        hilum = np.broadcast_to(hilum, size)
        paint(name, kidney & ~hilum)
    aorta_c = spine_c + np.array([0.08 * unit, -0.3 * unit, 0.0], dtype=np.float32)
    aorta_r = 0.07 * unit * rng.uniform(0.85, 1.15)
    drift = _smooth_field(rng, (t,), terms=2, freq=(1.0, 3.0), amplitude=0.02 * unit)
    paint("aorta", ((x - aorta_c[0] - drift) ** 2 + (y - aorta_c[1]) ** 2) < aorta_r ** 2)
    # Gallbladder: small, under the liver's anterior edge.
    paint("gallbladder", _blob(rng, grid, mm(-0.28 + jitter(0.04), -0.4 + jitter(0.04), 0.5 + jitter(0.05)),
                               np.array([0.07, 0.11, 0.1 * z.max() / unit]) * unit * rng.uniform(0.85, 1.15),
                               jitter(0.8), wobble=0.08))

    # Partial volume: blur in physical units, then scanner noise.
    blur_input = sitk.GetImageFromArray(hu)
    blur_input.SetSpacing(tuple(float(s) for s in spacing))
    blurred = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(blur_input, BLUR_MM))
    noisy = blurred + rng.normal(0.0, NOISE_HU, size=size).astype(np.float32)
    image = np.clip(np.rint(noisy), -1024, 3071).astype(np.int16)
    return Phantom(image=image, label=label, spacing_xyz=tuple(float(s) for s in spacing))


def _to_sitk(array: np.ndarray, spacing_xyz: tuple[float, float, float]):  # -> sitk.Image
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing_xyz)
    return image


def _case_rng(seed: int, split: int, index: int) -> np.random.Generator:
    # One independent stream per case, so a case does not depend on how many others are made.
    return np.random.default_rng([seed, split, index])


def estimated_peak_bytes(shape: tuple[int, int, int]) -> int:
    """Memory one case of nominal ``shape`` may need while it is generated (the largest size it varies to)."""
    largest = (shape[0] * _SIZE_SPREAD[0][1], shape[1] * _SIZE_SPREAD[1][1], shape[2] * _SIZE_SPREAD[2][1])
    return int(math.prod(largest) * _PEAK_BYTES_PER_VOXEL)


def _available_memory() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_phantom_fits(shape: tuple[int, int, int], remedy: str = "choose a smaller shape") -> None:
    """Raise ``ValueError`` when a phantom of nominal ``shape`` would need more memory than is available."""
    needed, available = estimated_peak_bytes(shape), _available_memory()
    if available is not None and needed > available:
        raise ValueError(f"a phantom of shape {tuple(shape)} (z, y, x) needs about {needed / 2**30:.1f} GiB of memory "
                         f"to generate, but {available / 2**30:.1f} GiB are available; {remedy}")


def write_phantom_dataset(
    raw_root: str | Path,
    dataset_id: int = 990,
    num_cases: int = 12,
    shape: tuple[int, int, int] = (48, 96, 96),
    seed: int = 0,
    name: str = "SCDPhantom",
    num_test_cases: int = 0,
    spacing_xyz: tuple[float, float, float] = (0.8, 0.8, 2.5),
    progress: bool = False,
    organ_contrast: float = 1.0,
) -> Path:
    """Write (or complete) a phantom dataset in nnU-Net v2 raw format; returns its folder.

    Layout: ``imagesTr/phantom_NNN_0000.nii.gz``, ``labelsTr/phantom_NNN.nii.gz``, optional
    ``imagesTs``/``labelsTs``, ``dataset.json`` and ``phantom.json`` (parameters and per-case
    statistics). Cases already complete are kept, so an interrupted run resumes. A folder made
    with other parameters is refused rather than mixed. Every argument is checked before anything
    is written, and a second run into the same folder waits for the first (``folder_lock``).
    """
    if num_cases < MIN_TRAINING_CASES:
        raise ValueError(f"at least {MIN_TRAINING_CASES} training cases are needed, got {num_cases}: nnU-Net splits "
                         f"them into 5 cross-validation folds before it trains any fold")
    if num_test_cases < 0:
        raise ValueError(f"the number of test cases cannot be negative, got {num_test_cases}")
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be three sizes (z, y, x), each at least 8, got {shape}")
    if seed < 0:  # numpy's generators take non-negative seeds only
        raise ValueError(f"the seed must be an integer of at least 0, got {seed}")
    if not 0.0 <= organ_contrast <= 1.0:
        raise ValueError(f"organ_contrast must be in [0, 1] (1: the standard intensities), got {organ_contrast}")
    check_phantom_fits(shape)
    folder = dataset_folder(Path(raw_root), dataset_id, name)
    on_wait = (lambda line: print(line, file=sys.stderr)) if progress else None
    with folder_lock(folder, on_wait):
        created = not folder.exists()
        try:
            _write_phantom_cases(folder, num_cases, shape, seed, num_test_cases, spacing_xyz, progress,
                                 organ_contrast)
        except Exception:
            if created:  # nothing of this run is worth keeping; an interrupt (not an Exception) keeps it to resume
                shutil.rmtree(folder, ignore_errors=True)
            raise
    return folder


def _write_phantom_cases(folder: Path, num_cases: int, shape: tuple[int, int, int], seed: int, num_test_cases: int,
                         spacing_xyz: tuple[float, float, float], progress: bool, organ_contrast: float) -> None:
    params = {"generator": f"nnunet_scd.datasets.phantom v{GENERATOR_VERSION}", "seed": int(seed),
              "shape_zyx": [int(s) for s in shape], "spacing_xyz": [float(s) for s in spacing_xyz]}
    if organ_contrast != 1.0:  # a manifest names only what differs from the standard phantom
        params["organ_contrast"] = float(organ_contrast)
    manifest_path = folder / "phantom.json"
    # Temporary files are ignored: under the folder lock they can only be leftovers of a killed run.
    occupied = folder.is_dir() and any(not p.name.startswith(".tmp_") for p in folder.iterdir())
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
    if manifest is not None and manifest.get("params") != params:
        raise FileExistsError(
            f"{folder} was generated with {manifest.get('params')}, not {params}. Remove the folder or use "
            "another dataset id."
        )
    if manifest is None and occupied:
        raise FileExistsError(
            f"{folder} exists but holds no phantom.json, so it is not a phantom dataset; not touching it. "
            "Use another dataset id or remove the folder."
        )

    cases: dict[str, dict] = dict(manifest.get("cases", {})) if manifest else {}
    manifest = {"params": params, "cases": cases}
    write_text_atomic(json.dumps(manifest, indent=1), manifest_path)

    plan = [("Tr", 0, i, f"phantom_{i:03d}") for i in range(num_cases)]
    plan += [("Ts", 1, i, f"phantom_ts_{i:03d}") for i in range(num_test_cases)]
    wanted = {case for *_, case in plan}
    for split in ("Tr", "Ts"):  # cases left from a run with more cases would break numTraining
        for path in sorted((folder / f"labels{split}").glob(f"*{FILE_ENDING}")):
            case = path.name[: -len(FILE_ENDING)]
            if case not in wanted:
                path.unlink()
                (folder / f"images{split}" / f"{case}_0000{FILE_ENDING}").unlink(missing_ok=True)
                cases.pop(case, None)

    for split, split_id, index, case in tqdm(plan, desc=f"phantoms -> {folder.name}", unit="case",
                                             disable=not progress):
        image_path = folder / f"images{split}" / f"{case}_0000{FILE_ENDING}"
        label_path = folder / f"labels{split}" / f"{case}{FILE_ENDING}"
        if image_path.is_file() and label_path.is_file() and case in cases:
            continue
        phantom = generate_phantom(_case_rng(seed, split_id, index), shape, spacing_xyz, organ_contrast)
        # Image and label appear together, the label last: a case counts as complete once its label exists.
        write_images_atomic([(_to_sitk(phantom.image, phantom.spacing_xyz), image_path),
                             (_to_sitk(phantom.label, phantom.spacing_xyz), label_path)])
        counts = np.bincount(phantom.label.ravel(), minlength=len(LABELS))
        cases[case] = {"shape_zyx": list(phantom.image.shape), "spacing_xyz": list(phantom.spacing_xyz),
                       "foreground_fraction": round(phantom.foreground_fraction, 6),
                       "voxels_per_label": {n: int(counts[v]) for n, v in LABELS.items() if v}}
        write_text_atomic(json.dumps(manifest, indent=1), manifest_path)

    write_dataset_json(
        folder, LABELS, num_cases, {"0": "CT"}, dataset_name=folder.name,
        description="Synthetic abdominal-CT-like phantoms from nnunet-scd (seeded, not patient data).",
        license="CC0 (synthetic)", converted_by="nnunet-scd synth",
    )




def summarize(folder: str | Path) -> dict[str, float]:
    """Foreground fraction (min/mean/max over training cases) and case count from ``phantom.json``."""
    cases = json.loads((Path(folder) / "phantom.json").read_text())["cases"]
    fractions = [c["foreground_fraction"] for name, c in cases.items() if not name.startswith("phantom_ts_")]
    return {"cases": len(fractions), "foreground_min": min(fractions),
            "foreground_mean": float(np.mean(fractions)), "foreground_max": max(fractions)}
