"""Blind-task generators: deterministic per seed, and every ground truth confirmed from the pixels.

The checks read only the rendered image (and, for the subway maps, the fixed
station layout): they share no code with the generators' geometry.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from pyvision_magic.eval.blind import BLIND_FAMILIES, generate_blind_tasks
from pyvision_magic.eval.tasks import load_tasks

N = 20  # tasks per family checked


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    out = tmp_path_factory.mktemp("blind")
    generate_blind_tasks(out, N, seed=7)
    return load_tasks(out / "tasks.jsonl")


def pixels(task) -> np.ndarray:
    with Image.open(task.images[0]) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def of(tasks, family):
    chosen = [t for t in tasks if t.meta["family"] == family]
    assert len(chosen) == N
    return chosen


def colour_mask(rgb, colour, tol=10):
    return (np.abs(rgb - np.array(colour)).max(axis=2) <= tol)


def dark(rgb):
    return rgb.max(axis=2) < 160


def enclosed_regions(ink, min_area=40) -> int:
    """White regions not touching the border (4-connected).

    Specks under ``min_area`` pixels are left out: where two outlines cross at a
    shallow angle, the pixels can pinch a thin wedge of white in two.
    """
    labels, n = ndimage.label(~ink)
    border = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])))
    areas = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(n + 1))
    return len({i for i in range(1, n + 1) if areas[i] >= min_area} - border)


def test_same_seed_same_bytes_other_seed_other_tasks(tmp_path):
    a = generate_blind_tasks(tmp_path / "a", 2, seed=1)
    b = generate_blind_tasks(tmp_path / "b", 2, seed=1)
    c = generate_blind_tasks(tmp_path / "c", 2, seed=2)
    digest = lambda ts: [hashlib.sha1(t.images[0].read_bytes()).hexdigest() for t in ts]  # noqa: E731
    assert digest(a) == digest(b)
    assert [t.answer for t in a] == [t.answer for t in b]
    assert digest(a) != digest(c)
    assert (tmp_path / "a" / "tasks.jsonl").read_text() == (tmp_path / "b" / "tasks.jsonl").read_text().replace(
        str(tmp_path / "b"), str(tmp_path / "a"))


def test_every_family_is_generated_with_modest_images(tasks):
    assert {t.meta["family"] for t in tasks} == set(BLIND_FAMILIES)
    for t in tasks:
        with Image.open(t.images[0]) as im:
            w, h = im.size
        assert max(w, h) <= 768, (t.id, w, h)
        assert t.benchmark == "blind" and t.subtask


def test_line_intersections_counted_from_the_pixels(tasks):
    answers = set()
    for t in of(tasks, "line_intersections"):
        rgb = pixels(t)
        # Dilated enough to bridge the gap the line drawn last cuts in the other;
        # the lines stay far apart away from their crossings.
        red = ndimage.binary_dilation(colour_mask(rgb, (230, 25, 25)), iterations=6)
        blue = ndimage.binary_dilation(colour_mask(rgb, (25, 60, 230)), iterations=6)
        labels, n = ndimage.label(red & blue)
        areas = ndimage.sum_labels(red & blue, labels, index=range(1, n + 1))
        crossings = int(np.count_nonzero(np.asarray(areas) >= 10))  # not single-pixel specks
        assert str(crossings) == t.answer, t.id
        answers.add(t.answer)
    assert len(answers) >= 2


def test_touching_circles_by_connectivity_of_the_outlines(tasks):
    answers = set()
    for t in of(tasks, "touching_circles"):
        ink = ndimage.binary_dilation(dark(pixels(t)), iterations=1)
        _, parts = ndimage.label(ink, structure=np.ones((3, 3)))
        assert parts in (1, 2)
        assert ("Yes" if parts == 1 else "No") == t.answer, t.id
        answers.add(t.answer)
    assert answers == {"Yes", "No"}


def test_circled_letter_found_under_the_red_ellipse(tasks):
    for t in of(tasks, "circled_letter"):
        rgb = pixels(t)
        red = colour_mask(rgb, (230, 25, 25), tol=40)
        ys, xs = np.nonzero(red)
        centre = (xs.min() + xs.max()) / 2
        ink = (rgb.max(axis=2) < 100)  # black text, not the red ellipse
        columns = ink.any(axis=0)
        # Letters are separated by empty columns: split into runs.
        edges = np.flatnonzero(np.diff(np.concatenate([[0], columns.astype(int), [0]])))
        runs = list(zip(edges[::2], edges[1::2]))
        word = t.meta["word"]
        assert len(runs) == len(word), t.id
        index = next(i for i, (a, b) in enumerate(runs) if a <= centre <= b)
        assert word[index] == t.answer, t.id


@pytest.mark.parametrize("family", ["overlapping_circles", "overlapping_pentagons"])
def test_overlapping_shapes_counted_from_enclosed_regions(tasks, family):
    for t in of(tasks, family):
        # A chain of n shapes where neighbours overlap encloses 2n - 1 regions.
        holes = enclosed_regions(dark(pixels(t)))
        assert holes % 2 == 1, t.id
        assert str((holes + 1) // 2) == t.answer, t.id


def test_nested_squares_counted_from_enclosed_regions(tasks):
    for t in of(tasks, "nested_squares"):
        assert str(enclosed_regions(dark(pixels(t)))) == t.answer, t.id


def test_grid_rows_and_columns_from_line_projections(tasks):
    subtasks = set()
    for t in of(tasks, "grid"):
        ink = dark(pixels(t))
        ys, xs = np.nonzero(ink)
        box = ink[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]

        def lines(profile):
            full = profile > 0.9
            return int(np.count_nonzero(np.diff(np.concatenate([[0], full.astype(int)])) == 1))

        rows = lines(box.mean(axis=1)) - 1
        cols = lines(box.mean(axis=0)) - 1
        expected = rows if t.subtask == "grid_rows" else cols
        assert str(expected) == t.answer, t.id
        subtasks.add(t.subtask)
    assert subtasks == {"grid_rows", "grid_columns"}


def test_subway_paths_counted_by_colour_near_the_stations(tasks):
    from pyvision_magic.eval._blind_grids import PATH_COLOURS, station_centres

    centres = station_centres(512)
    for t in of(tasks, "subway"):
        rgb = pixels(t)
        yy, xx = np.mgrid[: rgb.shape[0], : rgb.shape[1]]
        near = {s: (xx - x) ** 2 + (yy - y) ** 2 <= 40 ** 2 for s, (x, y) in centres.items()}
        start, end = t.meta["from"], t.meta["to"]
        count = 0
        for colour in PATH_COLOURS:
            mask = colour_mask(rgb, colour, tol=0)
            if not mask.any():
                continue
            touched = {s for s, disc in near.items() if (mask & disc).any()}
            assert len(touched) == 2, (t.id, colour, touched)  # each colour is one path
            count += touched == {start, end}
        assert str(count) == t.answer, t.id


def test_bad_arguments_are_config_errors(tmp_path):
    from pyvision_magic import ConfigError

    with pytest.raises(ConfigError, match="at least 1"):
        generate_blind_tasks(tmp_path, 0)
    with pytest.raises(ConfigError, match="Unknown blind task family 'squares'"):
        generate_blind_tasks(tmp_path, 1, families=["squares"])
