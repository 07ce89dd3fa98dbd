"""Which earlier tools a copied tool needs (pyvision_magic._names)."""

from __future__ import annotations

import pytest

from pyvision_magic._names import free_names, module_names, turns_needed


@pytest.mark.parametrize("code, names", [
    ("mask = a > 1", {"mask"}),
    ("a, (b, *c) = f()", {"a", "b", "c"}),
    ("def measure(x):\n    inner = x\n    return inner", {"measure"}),
    ("class Box:\n    size = 3", {"Box"}),
    ("import os.path as p, sys\nfrom math import pi as PI", {"p", "sys", "PI"}),
    ("import os.path", {"os"}),
    ("for i, v in enumerate(x):\n    total = v", {"i", "v", "total"}),
    ("with open(f) as fh:\n    data = fh.read()", {"fh", "data"}),
    ("try:\n    pass\nexcept Exception as err:\n    kept = err", {"err", "kept"}),
    ("if (n := 3) > 2:\n    big = n", {"n", "big"}),
    ("squares = [y := v * v for v in range(3)]", {"squares", "y"}),  # := leaks out
    ("[w for w in range(3)]", set()),  # the loop variable does not
    ("f = lambda q: q", {"f"}),
    ("@deco\ndef g():\n    h = 1", {"g"}),
    ("x += 1", {"x"}),
    # IPython syntax, read as IPython runs it (a magic's argument is a string to it)
    ("!ls\nfound = 1\n%time total = 2", {"found"}),
    ("def broken(:", set()),
    ("", set()),
])
def test_module_names_are_what_a_tool_leaves_in_the_kernel(code, names):
    assert module_names(code) == names


@pytest.mark.parametrize("code, names", [
    ("plt.imshow(mask)\nprint(len(cnts))", {"plt", "mask", "cnts"}),
    ("mask = mask > 0", {"mask"}),  # the mask an earlier tool left
    ("level = 1\nlevel += 1\nprint(level)", set()),
    ("count += 1", {"count"}),
    ("for v in values:\n    total = total + v", {"values", "total"}),
    ("total = 0\nfor v in values:\n    total = total + v", {"values"}),
    ("with open(p) as fh:\n    print(fh, extra)", {"p", "extra"}),
    ("try:\n    pass\nexcept KeyError as e:\n    print(e, why)", {"why"}),
    ("if (n := 3) > 2:\n    print(n)", set()),
    ("del old", {"old"}),
    ("print(later())\ndef later():\n    return 1", {"later"}),  # called before its def
    ("def f(a):\n    return a + offset", {"offset"}),
    ("def f():\n    return helper()\ndef helper():\n    return 1", set()),  # at call time
    ("g = lambda: scale * 2", {"scale"}),
    ("print(m)\nm = 1", {"m"}),
    ("print([v for v in values])", {"values"}),
    ("import numpy as np\nnp.zeros(3)", set()),
    ("len(range(3)); print(None)", set()),  # builtins
    ("print(", set()),  # does not parse
    ("!echo $where\nprint(level)", {"get_ipython", "level"}),  # as IPython runs it
])
def test_free_names_are_read_and_never_bound(code, names):
    assert free_names(code) == names


def test_the_latest_definition_is_used_and_its_own_needs_follow():
    codes = [
        "mask = image_clue_0 > 0\nscale = 2",  # 0
        "mask = mask & edges",                 # 1: needs 0's mask, and edges (never defined)
        "def area(m):\n    return m.sum() * scale",  # 2: needs scale from 0
        "print('unrelated')\nlevel = 5",       # 3
        None,                                  # 4: a turn without code
    ]
    assert turns_needed(codes, "print(area(mask))", {"image_clue_0"}) == \
        [(0, ["mask", "scale"]), (1, ["mask"]), (2, ["area"])]
    assert turns_needed(codes, "print(level, undefined_name)") == [(3, ["level"])]
    assert turns_needed(codes, "print(1)") == []
    assert turns_needed(codes, "print(image_clue_0)", {"image_clue_0"}) == []
    assert turns_needed(codes, "syntax error here") == []
