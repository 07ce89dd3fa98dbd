"""Blind-task families drawn as tables and maps (see :mod:`.blind`)."""

from __future__ import annotations

import math
import random

from ._blind_shapes import ALPHABET, _canvas, _font
from .blind import Drawing

#: Path colours of the subway maps: saturated and far apart, never black or white.
PATH_COLOURS = [(230, 25, 25), (25, 150, 40), (25, 60, 230), (240, 140, 0),
                (150, 40, 190), (0, 170, 190), (220, 30, 160), (130, 90, 30)]
STATIONS = "ABCD"
STATION_RADIUS = 16
#: Directions (degrees, image coordinates) in which paths may leave each station.
PORTS = {
    "A": [0, 30, 60, 90],
    "B": [90, 120, 150, 180],
    "C": [180, 210, 240, 270],
    "D": [270, 300, 330, 360],
}


def station_centres(size: int = 512) -> dict[str, tuple[int, int]]:
    """A top left, B top right, C bottom right, D bottom left."""
    inset = 56
    return {"A": (inset, inset), "B": (size - inset, inset),
            "C": (size - inset, size - inset), "D": (inset, size - inset)}


def grid(rng: random.Random) -> Drawing:
    """An R x C table, empty or with a letter in some cells."""
    rows, cols = rng.randint(3, 9), rng.randint(3, 9)
    cell_w = rng.randint(40, min(80, 600 // cols))
    cell_h = rng.randint(30, min(60, 480 // rows))
    width = rng.choice([2, 3])
    margin = 30
    image, draw = _canvas(cols * cell_w + 2 * margin + width, rows * cell_h + 2 * margin + width)
    for r in range(rows + 1):
        y = margin + r * cell_h
        draw.rectangle([margin, y, margin + cols * cell_w + width - 1, y + width - 1], fill=(0, 0, 0))
    for c in range(cols + 1):
        x = margin + c * cell_w
        draw.rectangle([x, margin, x + width - 1, margin + rows * cell_h + width - 1], fill=(0, 0, 0))
    filled = rng.random() < 0.5
    if filled:
        font = _font(min(cell_h, cell_w) // 2)
        for r in range(rows):
            for c in range(cols):
                if rng.random() < 0.6:
                    draw.text((margin + c * cell_w + cell_w // 2, margin + r * cell_h + cell_h // 2),
                              rng.choice(ALPHABET), fill=(0, 0, 0), font=font, anchor="mm")
    asked = rng.choice(["rows", "columns"])
    return Drawing(
        image,
        f"How many {asked} does this table have? Answer with a number.",
        str(rows if asked == "rows" else cols),
        "integer",
        f"grid_{asked}",
        {"rows": rows, "columns": cols, "cell": [cell_w, cell_h], "filled": filled},
    )


def _port_point(centre: tuple[int, int], degrees: float, distance: float) -> tuple[float, float]:
    a = math.radians(degrees)
    return centre[0] + distance * math.cos(a), centre[1] + distance * math.sin(a)


def subway(rng: random.Random) -> Drawing:
    """Coloured paths between four stations; each path has its own colour."""
    size = 512
    centres = station_centres(size)
    pairs = [(a, b) for i, a in enumerate(STATIONS) for b in STATIONS[i + 1:]]
    start, end = rng.choice(pairs)
    wanted = rng.randint(0, 3)
    free = {s: rng.sample(PORTS[s], len(PORTS[s])) for s in STATIONS}
    paths: list[tuple[str, str]] = [(start, end)] * wanted
    for s in (start, end):
        del free[s][:wanted]
    others = [p for p in pairs if p != (start, end)]
    for _ in range(rng.randint(1, 3) if wanted < 3 else rng.randint(0, 2)):
        a, b = rng.choice(others)
        if free[a] and free[b] and len(paths) < len(PATH_COLOURS):
            paths.append((a, b))
            free[a].pop()
            free[b].pop()
    rng.shuffle(paths)
    # Ports were reserved per station above; hand them out in drawing order.
    ports = {s: [p for p in PORTS[s] if p not in free[s]] for s in STATIONS}
    for s in STATIONS:
        rng.shuffle(ports[s])
    colours = rng.sample(PATH_COLOURS, len(paths))
    image, draw = _canvas(size, size)
    drawn = []
    for (a, b), colour in zip(paths, colours):
        pa, pb = ports[a].pop(), ports[b].pop()
        points = [_port_point(centres[a], pa, STATION_RADIUS), _port_point(centres[a], pa, 48)]
        for _ in range(rng.randint(1, 2)):
            points.append((rng.uniform(0.3, 0.7) * size, rng.uniform(0.3, 0.7) * size))
        points += [_port_point(centres[b], pb, 48), _port_point(centres[b], pb, STATION_RADIUS)]
        draw.line(points, fill=colour, width=6, joint="curve")
        drawn.append({"from": a, "to": b, "colour": list(colour),
                      "points": [[round(x, 1), round(y, 1)] for x, y in points]})
    font = _font(20)
    for name, (x, y) in centres.items():
        r = STATION_RADIUS
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(0, 0, 0))
        draw.text((x, y), name, fill=(255, 255, 255), font=font, anchor="mm")
    return Drawing(
        image,
        f"The coloured lines are subway lines between the stations A, B, C and D. How many "
        f"single-colour paths go from station {start} to station {end}? Answer with a number.",
        str(wanted),
        "integer",
        "subway",
        {"from": start, "to": end, "paths": drawn},
    )
