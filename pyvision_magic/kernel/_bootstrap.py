"""Code that runs inside the child kernel, not in the parent.

The parent sends the source of this file to the child at start (the child may
be another interpreter where pyvision_magic is not installed) and runs it as
a private module ``_pyvision_child``, then calls :func:`install`. Nothing here
may import pyvision_magic, and importing this file in the parent has no
effect besides defining functions.

What it sets up, and why:

- ``np``, ``cv2``, ``Image``, ``plt`` in the user namespace, so tools can start
  at once. Only ``Image`` is imported at start: the others are
  :class:`LazyModule` stand-ins that import on first use and then put the real
  module in their place, since importing numpy, OpenCV and pyplot would cost
  more CPU than the kernel itself.
- The display patches of OpenCV and pyplot are applied by :class:`PatchOnImport`
  right after the module is first executed, however it gets imported (a
  stand-in, the tool's own ``import``, another library importing it).
- Every image a tool shows (``plt.show()``, figures left open, ``display(fig)``,
  ``Image.show()``, ``cv2.imshow()``, a PIL image or figure as the last
  expression) is shrunk to the pixel budget *before* encoding, bound as the next
  ``image_clue_N`` and sent with that name in its metadata.
- Resource limits and the child-subreaper flag, so runaway tools cannot take the
  parent with them and every process they start can be found and killed.
- No output of one execution reaches another (see "Output of threads and
  processes" below): threads print as the execution that started them, each
  execution has pipes of its own on fd 1 and 2, and processes a tool leaves
  running are killed when its execution ends, with a note on stderr.
- Every message is valid UTF-8 (lone surrogates become U+FFFD), bytes written to
  ``sys.stdout.buffer`` or fd 1 arrive as text, GUI matplotlib backends are
  replaced by ours, and images displayed by other means than ours are checked
  (and shrunk) here, so the parent gets no broken or huge image to decode.
"""

from __future__ import annotations

import base64
import codecs
import functools
import hashlib
import importlib
import importlib.util
import io
import json
import math
import os
import sys
import threading
import time

#: Set by :func:`install`; see the parent's ``ChildKernel`` traits.
CONFIG: dict = {"max_image_pixels": 1024 * 1024, "max_images": 8}

#: Per-kernel counters: the next ``image_clue_N`` index and this execution's images;
#: the modules of :data:`PATCHES` already patched; the msg_id of the running
#: execution (None between executions).
STATE: dict = {
    "next_index": 0, "shown": 0, "dropped": 0, "displayed_figures": set(), "patched": set(),
    "execution": None, "noted_backends": set(),
    # Files the execution wrote: the listing before it, and what was shown and saved.
    "folder": None, "files_before": None, "saved": {}, "shown_ids": {},
    "shown_files": set(), "formatted": None,
    # Digests of images displayed by other means (IPython.display.Image('x.png')):
    # a saved file with the same bytes was shown already.
    "shown_digests": set(),
}

BACKEND_MODULE = "_pyvision_mpl_backend"
PR_SET_CHILD_SUBREAPER = 36


def _shell():
    from IPython import get_ipython

    return get_ipython()


def _fit(width: int, height: int) -> tuple[int, int]:
    """Largest size with the same aspect ratio within the pixel budget."""
    budget = CONFIG["max_image_pixels"]
    if not budget or width * height <= budget:
        return width, height
    scale = math.sqrt(budget / float(width * height))
    return max(1, int(width * scale)), max(1, int(height * scale))


def _shrink(image):
    width, height = _fit(*image.size)
    if (width, height) == image.size:
        return image
    from PIL import Image

    return image.resize((width, height), Image.Resampling.LANCZOS)


def _encode_png(image) -> bytes:
    if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"):
        image = image.convert("RGBA" if "A" in image.mode else "RGB")
    buffer = io.BytesIO()
    # Level 3 is several times faster than the default 6 for a few % more bytes.
    image.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def _bind(image) -> str:
    name = f"image_clue_{STATE['next_index']}"
    STATE["next_index"] += 1
    _shell().user_ns[name] = image
    return name


def _take_slot() -> bool:
    """Count an image against this execution's cap; False means drop it."""
    if CONFIG["max_images"] is not None and STATE["shown"] >= CONFIG["max_images"]:
        STATE["dropped"] += 1
        return False
    STATE["shown"] += 1
    return True


def _figure_image(figure):
    """Render a matplotlib figure within the pixel budget, as a loaded PIL image."""
    from PIL import Image

    width_in, height_in = figure.get_size_inches()
    dpi = float(figure.dpi)
    pixels = width_in * dpi * height_in * dpi
    budget = CONFIG["max_image_pixels"]
    if budget and pixels > budget:
        # Lowering the dpi renders fewer pixels, far cheaper than rendering big and resizing.
        # The budget applies to the tight box (margins cropped), so measure that first,
        # at the lowered dpi so the renderer's buffer stays small.
        original = figure.dpi
        figure.set_dpi(dpi * math.sqrt(budget / pixels))
        try:
            box = figure.get_tightbbox(figure.canvas.get_renderer())
            width_in, height_in = box.width + 0.2, box.height + 0.2  # savefig pads 0.1 in
        except Exception:  # measuring is an optimisation; the shrink below still applies
            pass
        finally:
            figure.set_dpi(original)
        dpi = math.sqrt(budget / (width_in * height_in)) * 0.98
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    buffer.seek(0)
    image = Image.open(buffer)
    image.load()
    # A tight bbox can grow past the figure when artists stick out; shrink then.
    return _shrink(image.convert("RGB"))


#: What a photo is sent as. Equal to what the parent would make of a PNG (its
#: ``encode_for_model``), so the parent passes the JPEG on as it is.
PHOTO_QUALITY = 85
_SAMPLE_PIXELS = 1 << 18


def _looks_flat(image) -> bool:
    """Whether an image is line art (plots, diagrams, masks), best kept as PNG.

    The parent's test: on a sample of whole rows, at least 75 % of neighbouring
    pixels are equal and there are few colours; sensor noise makes both rare in photos.
    """
    import numpy as np
    from PIL import Image

    width, height = image.size
    rows = max(1, min(height, _SAMPLE_PIXELS // max(width, 1)))
    sample = image if rows == height else image.resize((width, rows), Image.Resampling.NEAREST)
    codes = np.asarray(sample.convert("RGB")).astype(np.uint32)
    codes = ((codes[..., 0] << 16) | (codes[..., 1] << 8) | codes[..., 2]).ravel()
    flat = np.count_nonzero(codes[1:] == codes[:-1]) / max(codes.size - 1, 1)
    return flat >= 0.75 and np.unique(codes).size <= max(256, 0.02 * codes.size)


def _encode(image):
    """``(mime, bytes)`` for the model: JPEG for photos, PNG for line art.

    The parent sends a photo as JPEG anyway; made here, it is not decoded and
    encoded again in the parent on every turn.
    """
    if image.mode in ("1", "P", "I", "F") or image.mode.startswith("I;16") or _looks_flat(image):
        return "image/png", _encode_png(image)
    from PIL import Image

    if image.mode not in ("L", "RGB"):  # flattened on white, as the parent does
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=PHOTO_QUALITY, optimize=True)
    return "image/jpeg", buffer.getvalue()


def _prepare(image):
    """Shrink, bind and encode one image; returns (mime, bytes, metadata)."""
    image = _shrink(image)
    name = _bind(image)
    mime, data = _encode(image)
    return mime, data, {"width": image.size[0], "height": image.size[1], "variable": name}


def _publish(image, text: str = "<image>", file: str | None = None) -> None:
    from IPython.display import publish_display_data

    mime, data, metadata = _prepare(image)
    if file is not None:
        metadata["file"] = file
    publish_display_data({mime: base64.b64encode(data).decode("ascii"), "text/plain": text},
                         {mime: metadata})


def _ref(thing):
    """A weak reference to ``thing`` (ids alone could be reused by a later object)."""
    import weakref

    try:
        return weakref.ref(thing)
    except TypeError:  # not weakly referable: never matched
        return lambda: None


def _noted(table: dict, thing):
    entry = table.get(id(thing))
    return entry if entry is not None and entry[0]() is thing else None


def _note_shown(thing) -> None:
    """Remember that ``thing`` was shown: a file it is saved to, or the file it was
    opened from (``Image.open``), is not shown again."""
    opened_from = getattr(thing, "filename", None)
    if isinstance(opened_from, str) and opened_from:
        STATE["shown_files"].add(os.path.realpath(opened_from))
    if _noted(STATE["shown_ids"], thing) is None:
        STATE["shown_ids"][id(thing)] = (_ref(thing),)
    saved = _noted(STATE["saved"], thing)
    if saved is not None:
        STATE["shown_files"].update(saved[1])


def _note_saved(thing, path) -> None:
    """Remember that ``thing`` was saved to ``path`` (when it is a file name)."""
    try:
        path = os.path.realpath(os.fspath(path))
    except TypeError:  # a file object: nothing to match later
        return
    saved = _noted(STATE["saved"], thing)
    if saved is None:
        saved = STATE["saved"][id(thing)] = (_ref(thing), set())
    saved[1].add(path)
    if _noted(STATE["shown_ids"], thing) is not None:
        STATE["shown_files"].add(path)


def publish_image(image) -> None:
    """Show a PIL image to the model (within the caps) and bind it."""
    _note_shown(image)
    if _take_slot():
        _publish(image)


def publish_figure(figure) -> None:
    """Show a matplotlib figure to the model (within the caps) and bind it."""
    STATE["displayed_figures"].add(id(figure))
    _note_shown(figure)
    if _take_slot():
        _publish(_figure_image(figure))


def _format_as(mime: str, thing, render):
    """One display formatter's answer for ``thing`` (a PIL image or a figure).

    IPython asks the PNG formatter, then the JPEG one: the PNG one makes the
    image and keeps a JPEG for the JPEG one, so each image is made and counted once.
    """
    if mime == "image/png":
        STATE["formatted"] = None
        _note_shown(thing)
        if not _take_slot():
            return None
        made_mime, data, metadata = _prepare(render(thing))
        if made_mime == "image/png":
            return data, metadata
        STATE["formatted"] = (id(thing), data, metadata)
        return None
    kept, STATE["formatted"] = STATE.get("formatted"), None
    if kept is not None and kept[0] == id(thing):
        return kept[1], kept[2]
    return None


def _format_pil(image):
    return _format_as("image/png", image, lambda image: image)


def _format_pil_jpeg(image):
    return _format_as("image/jpeg", image, None)


def _format_figure(figure):
    STATE["displayed_figures"].add(id(figure))
    return _format_as("image/png", figure, _figure_image)


def _format_figure_jpeg(figure):
    return _format_as("image/jpeg", figure, None)


def _shown_bytes(path: str) -> bool:
    """Whether an image with the same bytes as the file at ``path`` was displayed."""
    if not STATE["shown_digests"]:
        return False
    try:
        with open(path, "rb") as file:
            return hashlib.sha256(file.read()).digest() in STATE["shown_digests"]
    except OSError:
        return False


def _publish_written_files() -> None:
    """Show the image files the execution wrote in its working folder, like shown images.

    Files it also showed (``savefig`` then ``show``) are not shown twice; files
    that were there before and not changed are not shown at all.
    """
    files = sys.modules.get("_pyvision_child_files")
    folder, before = STATE.get("folder"), STATE.get("files_before")
    if files is None or folder is None or before is None:
        return
    import warnings

    from PIL import Image

    for path in files.written_since(before, folder):
        full = os.path.join(folder, path)
        if os.path.realpath(full) in STATE["shown_files"] or _shown_bytes(full):
            continue
        if not _take_slot():
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # DecompressionBombWarning: checked here
                with Image.open(full) as image:
                    if image.size[0] * image.size[1] > MAX_DISPLAYED_PIXELS:
                        raise ValueError(f"{image.size[0]}x{image.size[1]} pixels is too many")
                    image.load()
                    image = image.copy() if image.readonly else image
        except Exception as exc:  # a half-written or foreign file: say so, in one line
            STATE["shown"] -= 1
            print(f"[pyvision] the tool saved {path}, which could not be read as an image "
                  f"({type(exc).__name__}: {exc}).", file=sys.stderr)
            continue
        name = f"image_clue_{STATE['next_index']}"
        print(f"[saved file {path}, shown below as {name}]")
        _publish(image, text=f"<saved file {path}>", file=path)


def _show_open_figures(*args, **kwargs) -> None:
    """``plt.show()`` for the child's backend: show every open figure, then close it."""
    import matplotlib.pyplot as plt

    for number in plt.get_fignums():
        figure = plt.figure(number)
        publish_figure(figure)
        plt.close(figure)


def _make_backend() -> None:
    """Register a matplotlib backend whose ``show`` publishes figures as images."""
    import types

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    module = types.ModuleType(BACKEND_MODULE)
    module.FigureCanvas = FigureCanvasAgg
    module.FigureManager = FigureCanvasAgg.manager_class
    module.show = _show_open_figures
    sys.modules[BACKEND_MODULE] = module


def _cv2_to_pil(array):
    import numpy as np
    from PIL import Image

    array = np.asarray(array)
    # cv2.imshow scales floats by 255 and 16-bit by 1/256; do the same.
    if array.dtype.kind == "f":
        array = (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    elif array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    elif array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 3 and array.shape[2] == 3:
        array = array[:, :, ::-1]
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, [2, 1, 0, 3]]
    return Image.fromarray(np.ascontiguousarray(array))


def _patch_pil(shell) -> None:
    """Route PIL's ``show`` and displayed PIL images to the notebook display."""
    from PIL import Image

    def show(self, title=None, **kwargs):
        publish_image(self)

    save = Image.Image.save

    @functools.wraps(save)
    def save_noted(self, fp, *args, **kwargs):
        _note_saved(self, fp)
        return save(self, fp, *args, **kwargs)

    Image.Image.show = show
    Image.Image.save = save_noted
    shell.display_formatter.formatters["image/png"].for_type(Image.Image, _format_pil)
    # PIL's own JPEG would show every image twice; ours comes from the PNG formatter.
    shell.display_formatter.formatters["image/jpeg"].for_type(Image.Image, _format_pil_jpeg)


def _patch_cv2(cv2) -> None:
    """Route OpenCV's window functions to the notebook display."""

    def imshow(winname, mat):
        _note_shown(mat)
        publish_image(_cv2_to_pil(mat))

    imwrite = cv2.imwrite

    @functools.wraps(imwrite)
    def imwrite_noted(filename, img, *args, **kwargs):
        _note_saved(img, filename)
        return imwrite(filename, img, *args, **kwargs)

    cv2.imshow = imshow
    cv2.imwrite = imwrite_noted
    cv2.waitKey = lambda *args, **kwargs: -1
    cv2.pollKey = lambda *args, **kwargs: -1
    cv2.namedWindow = lambda *args, **kwargs: None
    cv2.destroyWindow = lambda *args, **kwargs: None
    cv2.destroyAllWindows = lambda *args, **kwargs: None


#: Backends that draw into memory or files; any other needs a screen or a browser
#: (Tk, Qt, GTK, wx, macOS, the notebook widgets), which a tool's kernel has not.
HEADLESS_BACKENDS = frozenset({"agg", "cairo", "pdf", "pgf", "ps", "svg", "template", "inline"})


def _needs_screen(backend) -> bool:
    if not isinstance(backend, str):  # matplotlib's "auto" sentinel
        return False
    name = backend.lower()
    if name.startswith("module://"):
        # A backend module is the tool's choice, except the notebook widget ones.
        return "ipympl" in name or "nbagg" in name
    return name not in HEADLESS_BACKENDS


def _keep_headless(pyplot) -> None:
    """Replace any switch to a GUI backend by ours, so later plots still show.

    A GUI backend cannot start without a display, and pyplot keeps failing on
    every plot once it is chosen. ``matplotlib.use`` after the import and
    ``%matplotlib tk`` go through ``switch_backend`` too.
    """
    switch = pyplot.switch_backend
    ours = "module://" + BACKEND_MODULE

    @functools.wraps(switch)
    def switch_backend(newbackend):
        if not isinstance(newbackend, str):  # "auto" would try the GUI ones first
            return switch(ours)
        if _needs_screen(newbackend):
            if newbackend.lower() not in STATE["noted_backends"]:  # %matplotlib switches twice
                STATE["noted_backends"].add(newbackend.lower())
                print(f"[pyvision] matplotlib backend {newbackend!r} needs a screen, which this "
                      "kernel has not; kept the one that shows figures as images.",
                      file=sys.stderr)
            newbackend = ours
        return switch(newbackend)

    pyplot.switch_backend = switch_backend


def _patch_pyplot(pyplot) -> None:
    """Make ``plt.show()`` publish figures, unless the tool chose a headless backend first."""
    import matplotlib
    from matplotlib.figure import Figure

    savefig = Figure.savefig

    @functools.wraps(savefig)
    def savefig_noted(self, fname, *args, **kwargs):
        _note_saved(self, fname)
        return savefig(self, fname, *args, **kwargs)

    if not getattr(savefig, "_pyvision", False):
        savefig_noted._pyvision = True
        Figure.savefig = savefig_noted
    _make_backend()
    try:
        chosen = matplotlib.rcParams._get_backend_or_none()
    except AttributeError:  # older matplotlib
        chosen = dict.__getitem__(matplotlib.rcParams, "backend")
        chosen = chosen if isinstance(chosen, str) else None
    _keep_headless(pyplot)
    # The kernel's MPLBACKEND (or none) is ours to replace; `matplotlib.use("agg")`
    # before the import is the tool's choice, as it is after the import, and a GUI
    # backend is replaced (with a note) by the wrapper.
    if chosen is None or chosen.lower() == os.environ.get("MPLBACKEND", "").lower():
        pyplot.switch_backend("module://" + BACKEND_MODULE)
    elif _needs_screen(chosen):
        pyplot.switch_backend(chosen)


def _patch_ndimage(ndimage) -> None:
    """Let ``find_objects`` take a boolean mask again, as models write it.

    Since numpy 2.3 a numpy bool is no index, and scipy (documented for integer
    labels) fails on a mask with "'numpy.bool' object cannot be interpreted as an
    integer" (scipy issue 23455); a mask is one label, so it is passed as 0/1.
    """
    find_objects = ndimage.find_objects

    @functools.wraps(find_objects)
    def find_objects_of_masks(input, *args, **kwargs):
        if getattr(getattr(input, "dtype", None), "kind", None) == "b":
            input = input.view("uint8")
        return find_objects(input, *args, **kwargs)

    ndimage.find_objects = find_objects_of_masks


#: Patches applied right after a module is first executed, by module name.
PATCHES = {"cv2": _patch_cv2, "matplotlib.pyplot": _patch_pyplot,
           "scipy.ndimage": _patch_ndimage}

#: Names in the user namespace bound to :class:`LazyModule`, and their modules.
LAZY_NAMES = {"np": "numpy", "cv2": "cv2", "plt": "matplotlib.pyplot"}


def _patch(name: str, module) -> None:
    try:
        PATCHES[name](module)
    except Exception as exc:  # the module still works, it just displays nothing
        print(f"[pyvision] could not set up display for {name}: {exc!r}", file=sys.stderr)
    # Left unmarked when interrupted, so the next cell's patch_missed tries again.
    STATE["patched"].add(name)


class _PatchingLoader:
    """Runs the real loader, then the module's patch; otherwise the real loader."""

    def __init__(self, loader, finder: "PatchOnImport", name: str) -> None:
        self.loader, self.finder, self.name = loader, finder, name

    def __getattr__(self, attr):
        return getattr(self.loader, attr)

    def exec_module(self, module) -> None:
        # The module and its spec keep the real loader (inspect, importlib.resources).
        module.__loader__ = self.loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self.loader
        self.finder.busy.add(self.name)
        try:
            self.loader.exec_module(module)
        finally:
            self.finder.busy.discard(self.name)
        # cv2's __init__ swaps entries in sys.modules while it loads; patch what stays.
        _patch(self.name, sys.modules.get(self.name, module))


class PatchOnImport:
    """A ``sys.meta_path`` finder that applies :data:`PATCHES` when a module is loaded.

    It finds nothing itself: it asks the finders after it and wraps the loader
    they return, so the patch runs before the importer sees the module. A
    module imported while it is being loaded (cv2 imports its native self
    under the same name) is left to the other finders.
    """

    def __init__(self) -> None:
        self.busy: set = set()

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in PATCHES or fullname in self.busy:
            return None
        self.busy.add(fullname)
        try:
            for finder in sys.meta_path:
                find = getattr(finder, "find_spec", None) if finder is not self else None
                spec = find(fullname, path, target) if find is not None else None
                if spec is not None:
                    break
            else:
                return None
        finally:
            self.busy.discard(fullname)
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _PatchingLoader(spec.loader, self, fullname)
        return spec

    @staticmethod
    def patch_missed() -> None:
        """Patch modules that were loaded without passing through here."""
        for name in PATCHES:
            if name not in STATE["patched"] and name in sys.modules:
                _patch(name, sys.modules[name])


def _load(proxy):
    module = object.__getattribute__(proxy, "_module")
    if module is None:
        module = importlib.import_module(object.__getattribute__(proxy, "_name"))
        object.__setattr__(proxy, "_module", module)
    # Every time, not only the first: the stand-in may be put back (the eval's reset
    # restores the namespace as it was after start).
    namespace = _shell().user_ns
    bound_as = object.__getattribute__(proxy, "_bound_as")
    if namespace.get(bound_as) is proxy:
        namespace[bound_as] = module
    return module


class LazyModule:
    """Stands in for a module until it is used, then imports it and steps aside.

    Any attribute access imports the module and rebinds ``bound_as`` in the user
    namespace to it (unless the tool rebound the name), so later code sees the
    module itself; copies of the stand-in keep forwarding to it.
    """

    __slots__ = ("_name", "_bound_as", "_module")

    def __init__(self, name: str, bound_as: str) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_bound_as", bound_as)
        object.__setattr__(self, "_module", None)

    def __getattribute__(self, attr):
        if attr in ("__reduce_ex__", "__reduce__"):  # pickled (cloudpickle, copy) by name
            return object.__getattribute__(self, attr)
        return getattr(_load(self), attr)

    def __reduce__(self):
        return importlib.import_module, (object.__getattribute__(self, "_name"),)

    def __setattr__(self, attr, value) -> None:
        setattr(_load(self), attr, value)

    def __delattr__(self, attr) -> None:
        delattr(_load(self), attr)

    def __dir__(self):
        return dir(_load(self))

    def __repr__(self) -> str:
        return repr(_load(self))


# -- output of threads and processes ------------------------------------------------
#
# The parent keeps only messages whose parent header is the execution it waits for.
# ipykernel stamps a write with the parent header of the thread that makes it, and
# a thread without one of its own -- every thread a tool starts -- gets that of
# whichever execution runs when it writes; output of child processes on fd 1 and 2
# is stamped the same way by ipykernel's fd watcher. So a thread, a timer or a
# process a tool leaves behind would print into a later execution. Instead:
#
# - A thread runs with the parent header of the code that started it, and work
#   given to a thread pool with that of the code that submitted it. What such a
#   thread prints after its execution ended carries that execution's msg_id, and
#   the parent drops it.
# - Each execution has pipes of its own on fd 1 and 2, read by threads that stamp
#   everything with that execution; a process inherits the pipes of the execution
#   that started it. Between executions fd 1 and 2 are the kernel's log.
# - Processes a tool leaves running are killed at the end of its execution (see
#   :func:`_stop_leftover_processes`), and then its pipes are read to the end, so
#   what they wrote before they died is part of that execution, and nothing later.
#
# Not covered: fd-level writes from the kernel process itself (C code, os.write)
# by a thread of an earlier execution land in the running one, since the fd
# table is shared by all threads; threads made with ``_thread.start_new_thread``
# print as the running execution, as before.

#: The kernel's own stdout and stderr streams by fd once fd output is ours; what
#: fd 1 and 2 point to between executions; the running execution's captures.
OUTPUT: dict = {"shell": None, "streams": {}, "idle": {}, "captures": [], "orphans": set()}

#: How long the end of an execution waits for its pipes to be read to the end.
PIPE_DRAIN_SECONDS = 1.0


def _parent():
    """The parent header the calling thread's output is stamped with, if any."""
    return getattr(OUTPUT["shell"], "parent_header", None)


def _msg_id(parent) -> str | None:
    if not isinstance(parent, dict):
        return None
    header = parent.get("header", parent)
    return header.get("msg_id") if isinstance(header, dict) else None


def _parent_variables(parent) -> list:
    """The context variables that hold the parent header, with what each gets for ``parent``.

    Those of ipykernel 7.x; earlier versions have one parent for all threads.
    """
    import contextvars

    shell = OUTPUT["shell"]
    header = parent.get("header", parent) if isinstance(parent, dict) else parent
    holders = [(shell, parent)]  # the shell keeps the whole message, the others its header
    for holder in (shell.displayhook, shell.display_pub, getattr(shell, "_data_pub", None),
                   sys.stdout, sys.stderr):
        holders.append((holder, header))
    found = []
    for holder, value in holders:
        variable = getattr(holder, "_parent_header", None)
        if isinstance(variable, contextvars.ContextVar):
            found.append((variable, value))
    return found


def _adopt(parent):
    """Stamp the calling thread's output with ``parent``; returns the undo for :func:`_release`."""
    shell = OUTPUT["shell"]
    if not parent or shell is None:
        return None
    if hasattr(shell, "set_thread_parent"):  # ipykernel >= 7.4
        return shell.reset_thread_parent, shell.set_thread_parent(parent)
    # ipykernel 7.0 to 7.3: the same, done on the variables themselves.
    tokens = [(variable, variable.set(value)) for variable, value in _parent_variables(parent)]
    return _reset_variables, tokens


def _reset_variables(tokens) -> None:
    for variable, token in reversed(tokens):
        variable.reset(token)


def _release(undo) -> None:
    if undo is not None:
        reset, tokens = undo
        reset(tokens)


def _thread_parents_supported() -> bool:
    """Whether a thread can have a parent header of its own (ipykernel 7: context variables)."""
    import contextvars

    return all(isinstance(getattr(holder, "_parent_header", None), contextvars.ContextVar)
               for holder in (OUTPUT["shell"], sys.stdout, sys.stderr))


def _attribute_threads() -> None:
    """Threads print as the execution that started them; pool work as its submitter."""
    from concurrent.futures import ThreadPoolExecutor

    start = threading.Thread.start

    @functools.wraps(start)
    def start_in_execution(self):
        parent = _parent()
        if parent:
            run = self.run

            def run_in_execution():
                _adopt(parent)  # for the thread's whole life: its context ends with it
                run()

            self.run = run_in_execution
        start(self)

    submit = ThreadPoolExecutor.submit

    # A pool outlives the execution that made it: its workers print as the caller.
    @functools.wraps(submit)
    def submit_in_execution(self, fn, /, *args, **kwargs):
        parent = _parent()

        def call_in_execution(*args, **kwargs):
            tokens = _adopt(parent)
            try:
                return fn(*args, **kwargs)
            finally:
                _release(tokens)

        return submit(self, call_in_execution, *args, **kwargs)

    threading.Thread.start = start_in_execution
    ThreadPoolExecutor.submit = submit_in_execution

    # The low-level way to start a thread (threading keeps its own reference).
    import _thread

    start_new = _thread.start_new_thread

    @functools.wraps(start_new)
    def start_new_in_execution(function, args, kwargs=None):
        parent = _parent()

        def run_in_execution(*args, **kwargs):
            if parent:
                _adopt(parent)
            return function(*args, **kwargs)

        return start_new(run_in_execution, args, kwargs or {})

    _thread.start_new_thread = _thread.start_new = start_new_in_execution


def _quiet_late_processes() -> None:
    """A process started by a thread of an execution that is over writes to the log.

    Its fd 1 and 2 would be those of the running execution (or the log between
    executions); only ``subprocess`` is covered (``os.system`` is not).
    """
    import subprocess

    get_handles = getattr(subprocess.Popen, "_get_handles", None)
    if get_handles is None or not OUTPUT["idle"]:
        return

    @functools.wraps(get_handles)
    def get_handles_of_execution(self, stdin, stdout, stderr):
        if STATE["execution"] is None or _msg_id(_parent()) != STATE["execution"]:
            stdout = OUTPUT["idle"].get(1) if stdout is None else stdout
            stderr = OUTPUT["idle"].get(2) if stderr is None else stderr
        return get_handles(self, stdin, stdout, stderr)

    subprocess.Popen._get_handles = get_handles_of_execution


class _Capture:
    """One execution's pipe on fd 1 or 2, and the thread that forwards it to the stream.

    Bytes are decoded as UTF-8 across reads, invalid ones replaced; the thread
    ends when every writer has closed the pipe.
    """

    def __init__(self, fd: int, stream, parent) -> None:
        read, write = os.pipe()
        try:
            os.dup2(write, fd)  # inheritable: processes started now write here
        except OSError:
            os.close(read)
            raise
        finally:
            os.close(write)
        self.thread = threading.Thread(
            target=self._forward, args=(read, stream, parent), name=f"pyvision-fd{fd}", daemon=True
        )
        self.thread.start()

    @staticmethod
    def _forward(read: int, stream, parent) -> None:
        _adopt(parent)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        try:
            while True:
                data = os.read(read, 1 << 16)
                text = decoder.decode(data, final=not data)
                if text:
                    stream.write(text)
                if not data:
                    break
        except Exception:  # the stream closed (kernel shutdown): nobody to tell
            pass
        finally:
            os.close(read)


def _take_over_fd_output() -> None:
    """Stop ipykernel's fd watchers, so fd 1 and 2 can get a pipe per execution."""
    for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
        watcher = getattr(stream, "watch_fd_thread", None)
        original = getattr(stream, "_original_stdstream_copy", None)
        if (not getattr(stream, "_should_watch", False) or watcher is None or original is None
                or getattr(stream, "_original_stdstream_fd", None) != fd):
            continue
        # The watcher checks the flag after each read: wake it with a byte it then drops.
        stream._should_watch = False
        os.write(fd, b"\0")
        watcher.join(1.0)
        if watcher.is_alive():
            stream._should_watch = True
            continue
        os.dup2(original, fd)  # the kernel's log (or terminal) between executions
        try:
            os.close(stream._fid)
        except (OSError, TypeError):
            pass
        stream._fid = None
        OUTPUT["streams"][fd] = stream
        OUTPUT["idle"][fd] = original
        # ipykernel answers the log's fd, so `subprocess.run(..., stdout=sys.stdout)`
        # would write past the tool's output; fd 1 is the running execution's pipe.
        stream.fileno = lambda fd=fd: fd


def _start_capture() -> None:
    _end_capture()  # one left over if an execution ended without post_run_cell
    parent = _parent()
    for fd, stream in OUTPUT["streams"].items():
        try:
            OUTPUT["captures"].append(_Capture(fd, stream, parent))
        except OSError as exc:  # out of fds: this output goes to the log instead
            print(f"[pyvision] fd {fd} output is not captured: {exc}", file=sys.__stderr__)


def _flush_buffers() -> None:
    """Write out what sits in Python's and C's own stdout buffers, while still ours."""
    for stream in (sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (ImportError, OSError, AttributeError):
        pass


def _end_capture() -> None:
    captures, OUTPUT["captures"] = OUTPUT["captures"], []
    if not captures:
        return
    _flush_buffers()
    for fd, target in OUTPUT["idle"].items():
        try:
            os.dup2(target, fd)  # drops the kernel's own end of the execution's pipe
        except OSError:
            pass
    # The processes holding the other ends were just killed: reading ends at once.
    # A writer that survived keeps its pipe, and the thread stamps it with this
    # execution after it is over, so the parent drops it.
    deadline = time.monotonic() + PIPE_DRAIN_SECONDS
    for capture in captures:
        capture.thread.join(max(0.0, deadline - time.monotonic()))


def _proc_stat(pid: int) -> tuple[bytes, int] | None:
    """``(state, parent pid)`` of a process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    return fields[0], int(fields[1])


def _children_by_files(pid: int) -> list:
    children = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return children
    for task in tasks:  # a child belongs to the thread that forked it
        try:
            with open(f"/proc/{pid}/task/{task}/children", "rb") as listing:
                children.extend(int(child) for child in listing.read().split())
        except OSError:
            pass
    return children


def _descendants() -> dict:
    """Every process below this one, as ``{pid: parent pid}``."""
    me = os.getpid()
    if os.path.exists(f"/proc/{me}/task/{me}/children"):
        children_of = _children_by_files  # a few reads instead of one per process
    else:  # kernels built without CONFIG_PROC_CHILDREN
        table: dict = {}
        for name in os.listdir("/proc"):
            info = _proc_stat(int(name)) if name.isdigit() else None
            if info is not None:
                table.setdefault(info[1], []).append(int(name))
        children_of = lambda pid: table.get(pid, ())  # noqa: E731
    found: dict = {}
    stack = [me]
    while stack:
        parent = stack.pop()
        for child in children_of(parent):
            if child not in found and child != me:
                found[child] = parent
                stack.append(child)
    return found


def _signal(pid: int, handle, signum: int) -> None:
    import signal

    try:
        if handle is not None:
            signal.pidfd_send_signal(handle, signum)
        else:
            os.kill(pid, signum)
    except (OSError, AttributeError):
        pass


def _stop_leftover_processes() -> int:
    """Kill every process below the kernel that still runs; returns how many.

    The kernel is a subreaper, so orphans and daemons of the tool stay below it.
    Straight SIGKILL, no SIGTERM grace: the execution is over, so nothing a
    process does on SIGTERM could reach the model, a grace period would delay
    every such execution, and untrusted code may ignore SIGTERM anyway. They are
    frozen first (SIGSTOP) so none can fork while the tree is walked, and each is
    signalled through a pidfd opened before its parent is checked again, so a pid
    reused meanwhile is never hit.
    """
    import signal

    _reap_orphans()
    if not sys.platform.startswith("linux"):
        return 0  # no /proc to walk; the parent kills the tree when the kernel ends
    frozen: dict = {}
    try:
        for _ in range(10):
            new = False
            for pid, parent in _descendants().items():
                if pid in frozen:
                    continue
                try:
                    handle = os.pidfd_open(pid)
                except (AttributeError, OSError):
                    handle = None
                info = _proc_stat(pid)
                if info is None or info[1] != parent or info[0] in (b"Z", b"X"):
                    if handle is not None:
                        os.close(handle)
                    continue  # ended (a zombie is not running), or moved: next round
                _signal(pid, handle, signal.SIGSTOP)
                frozen[pid] = (handle, parent)
                new = True
            if not new:
                break
    finally:
        me = os.getpid()
        for pid, (handle, parent) in frozen.items():
            _signal(pid, handle, signal.SIGKILL)
            if handle is not None:
                os.close(handle)
            if parent != me:
                # Its parent dies too, so it ends as our zombie, and no Popen of the
                # tool waits for it (those are for direct children only): reap it.
                OUTPUT["orphans"].add(pid)
    return len(frozen)


def _reap_orphans() -> None:
    for pid in list(OUTPUT["orphans"]):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid  # not ours (any more): nothing to reap
        except OSError:
            continue
        if done:
            OUTPUT["orphans"].discard(pid)


def _end_execution() -> None:
    """Kill what the tool left running and collect the rest of its output."""
    stopped = 0
    try:
        stopped = _stop_leftover_processes()
    except Exception as exc:  # never let cleanup hide the cell's own result
        print(f"[pyvision] could not stop the tool's processes: {exc!r}", file=sys.stderr)
    finally:  # even when an interrupt (the time limit) lands here
        _end_capture()
    if stopped:
        stream = OUTPUT["streams"].get(2, sys.stderr)
        plural = "es" if stopped != 1 else ""
        stream.write(f"[pyvision] stopped {stopped} background process{plural} the tool "
                     "left running (processes end with the tool that started them).\n")
    STATE["execution"] = None


# -- messages: valid UTF-8, and images the parent can open ---------------------------

#: Displayed images with more pixels than this are not decoded, whatever their size
#: in bytes: a PNG header can claim any size.
MAX_DISPLAYED_PIXELS = 50_000_000
IMAGE_MIMES = ("image/png", "image/jpeg")
DISPLAY_MESSAGES = frozenset({"display_data", "execute_result", "update_display_data"})


class StreamBytes(io.BufferedIOBase):
    """``sys.stdout.buffer`` for the kernel's streams: bytes arrive as UTF-8 text.

    Invalid bytes become U+FFFD; a character split across writes is kept whole.
    """

    def __init__(self, stream) -> None:
        super().__init__()
        self._stream = stream
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = bytes(data)
        with self._lock:
            text = self._decoder.decode(data)
        if text:
            self._stream.write(text)
        return len(data)

    def flush(self) -> None:
        self._stream.flush()

    def fileno(self) -> int:
        return self._stream.fileno()


def _replace_surrogates(value):
    """``value`` with lone surrogates in its strings replaced by U+FFFD."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            # Through UTF-16 a valid surrogate pair becomes its character again.
            return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {_replace_surrogates(key): _replace_surrogates(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_replace_surrogates(item) for item in value]
    return value


def _header_size(raw: bytes):
    """Width and height from a PNG or JPEG header, past PIL's bomb check; or None."""
    from PIL import JpegImagePlugin, PngImagePlugin

    for plugin in (PngImagePlugin.PngImageFile, JpegImagePlugin.JpegImageFile):
        try:
            return plugin(io.BytesIO(raw)).size  # reads the header only
        except Exception:  # noqa: BLE001 - not this format
            continue
    return None


def _vet_image(encoded):
    """Check one displayed image: ``(None, None)`` if fine as it is, ``(png, size)``
    if it was shrunk to the pixel budget, or ``(None, reason)`` if it cannot be shown.

    The size comes from the header before anything is decoded; then the image is
    decoded (within the budget, cheap), since a broken one would fail the model's
    request as a whole.
    """
    import warnings

    from PIL import Image

    raw = base64.b64decode(encoded) if isinstance(encoded, str) else bytes(encoded)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning: the size is checked here
            with Image.open(io.BytesIO(raw)) as image:
                width, height = image.size
                if width * height > MAX_DISPLAYED_PIXELS:
                    return None, f"an oversized image ({width}x{height} pixels)"
                image.load()
                if _fit(width, height) == (width, height):
                    return None, None
                small = _shrink(image)
                return _encode_png(small), small.size
    except Image.DecompressionBombError:
        size = _header_size(raw)
        dims = f"{size[0]}x{size[1]} pixels" if size else f"more than {MAX_DISPLAYED_PIXELS:,} pixels"
        return None, f"an oversized image ({dims})"
    except Exception as exc:  # PIL raises many kinds for broken data
        reason = str(exc).split(" <", 1)[0] or type(exc).__name__
        return None, f"an invalid image ({reason[:120]})"


def _vet_display(msg: dict) -> bool:
    """Check images the running execution displayed by other means than ours.

    Ours (with a ``variable``) were made and counted here. Others count against the
    same cap; a broken or huge one becomes a line of text, and one over the
    budget is shrunk. Returns False to drop the message (over the cap).
    """
    if STATE["execution"] is None or _msg_id(msg.get("parent_header")) != STATE["execution"]:
        return True  # not the running execution's: the parent drops it anyway
    content = msg.get("content")
    data = content.get("data") if isinstance(content, dict) else None
    mime = next((m for m in IMAGE_MIMES if isinstance(data, dict) and m in data), None)
    if mime is None:
        return True
    metadata = content.get("metadata") if isinstance(content.get("metadata"), dict) else {}
    if any(isinstance(metadata.get(m), dict) and "variable" in metadata[m] for m in IMAGE_MIMES):
        return True
    if not _take_slot():
        return False
    try:
        raw = data[mime]
        raw = base64.b64decode(raw) if isinstance(raw, str) else bytes(raw)
        STATE["shown_digests"].add(hashlib.sha256(raw).digest())
        png, detail = _vet_image(raw)
    except Exception as exc:  # e.g. not base64 at all
        png, detail = None, f"an invalid image ({type(exc).__name__})"
    rest = {key: value for key, value in data.items() if key not in IMAGE_MIMES}
    if png is not None:
        content["data"] = {**rest, "image/png": base64.b64encode(png).decode("ascii")}
        content["metadata"] = {"image/png": {"width": detail[0], "height": detail[1]}}
    elif detail is not None:
        # It still uses up the cap: 500 broken images cost 8 lines, not 500.
        content["data"] = {"text/plain": f"[pyvision] the tool displayed {detail}; it was "
                                          "not shown. Display a valid image of sensible size."}
        content["metadata"] = {}
    return True


def _guard_session(session) -> None:
    """Make every message of ``session`` valid UTF-8, and vet displayed images.

    A lone surrogate (``"\\udcff"`` from a badly encoded file name) makes the
    packer fail or emit invalid UTF-8, and the whole output flush is lost; here it
    becomes U+FFFD instead. Checked on the packed bytes, so the usual message
    costs one ``isascii``.
    """
    pack, send = session.pack, session.send

    def pack_valid_utf8(value):
        try:
            packed = pack(value)
        except UnicodeError:
            return pack(_replace_surrogates(value))
        if isinstance(packed, bytes) and not packed.isascii():
            try:
                packed.decode("utf-8")
            except UnicodeDecodeError:  # json's fallback encodes with surrogateescape
                return pack(_replace_surrogates(value))
        return packed

    def send_vetted(stream, msg_or_type, *args, **kwargs):
        if (isinstance(msg_or_type, dict) and msg_or_type.get("msg_type") in DISPLAY_MESSAGES
                and not _vet_display(msg_or_type)):
            return None
        return send(stream, msg_or_type, *args, **kwargs)

    session.pack = pack_valid_utf8
    session.send = send_vetted


def _guard_messages(shell) -> None:
    sessions = {}
    for holder in (sys.stdout, sys.stderr, shell.display_pub, shell.displayhook,
                   getattr(shell, "kernel", None)):
        session = getattr(holder, "session", None)
        if session is not None and hasattr(session, "pack") and hasattr(session, "send"):
            sessions[id(session)] = session
    for session in sessions.values():
        _guard_session(session)
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "set_parent") and not hasattr(stream, "buffer"):
            stream.buffer = StreamBytes(stream)


def _refuse_gui_loops(shell) -> None:
    """``%gui qt`` or ``%matplotlib tk`` must not start an event loop that needs a screen."""
    enable_gui = getattr(shell, "enable_gui", None)
    if enable_gui is None:
        return

    def enable_gui_headless(gui=None):
        if gui in (None, "inline"):
            return enable_gui(gui)
        # Without a screen its event loop would fail in the kernel's own loop. What
        # needs it (a GUI matplotlib backend) was replaced by ours, with a note.
        return None

    shell.enable_gui = enable_gui_headless


def _before_cell(info=None) -> None:
    STATE["execution"] = _msg_id(_parent())
    _start_capture()
    PatchOnImport.patch_missed()
    STATE["shown"] = 0
    STATE["dropped"] = 0
    STATE["displayed_figures"] = set()
    STATE["noted_backends"] = set()
    STATE.update(saved={}, shown_ids={}, shown_files=set(), formatted=None, shown_digests=set())
    files = sys.modules.get("_pyvision_child_files")
    try:
        STATE["folder"] = os.getcwd()
        STATE["files_before"] = files.listing(STATE["folder"]) if files else None
    except OSError:  # the tool removed its working folder: nothing to compare with
        STATE["folder"] = STATE["files_before"] = None


#: What the model and the user read when OCR is tried where it is not installed.
OCR_MISSING = ("[pyvision] OCR is an optional extra and is not installed here: it needs "
               "`pip install 'pyvision_magic[ocr]'` and the tesseract program (Debian/Ubuntu: "
               "`apt install tesseract-ocr`). Read text from the image by other means.")


def _explain_missing_ocr(result) -> None:
    error = getattr(result, "error_in_exec", None)
    missing_module = isinstance(error, ImportError) and getattr(error, "name", None) == "pytesseract"
    if missing_module or type(error).__name__ == "TesseractNotFoundError":
        print(OCR_MISSING, file=sys.stderr)


def _after_cell(result=None) -> None:
    """Show figures the cell left open, report images over the cap, end the execution."""
    _explain_missing_ocr(result)
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        try:
            for number in plt.get_fignums():
                figure = plt.figure(number)
                if id(figure) not in STATE["displayed_figures"]:
                    publish_figure(figure)
            plt.close("all")
        except Exception as exc:  # a broken figure must not hide the cell's own result
            print(f"[pyvision] could not render a figure: {exc!r}", file=sys.stderr)
    try:
        _publish_written_files()
    except Exception as exc:  # never let this hide the cell's own result
        print(f"[pyvision] could not look for saved images: {exc!r}", file=sys.stderr)
    STATE.update(saved={}, shown_ids={})
    if STATE["dropped"]:
        from IPython.display import publish_display_data

        publish_display_data({"text/plain": ""}, {"pyvision": {"dropped_images": STATE["dropped"]}})
    _end_execution()


def _set_limits(config: dict) -> None:
    try:
        import resource
        import signal
    except ImportError:  # not on POSIX
        return
    for name, key in (("RLIMIT_AS", "memory_limit"), ("RLIMIT_FSIZE", "file_size_limit")):
        value = config.get(key)
        if value is None or not hasattr(resource, name):
            continue
        which = getattr(resource, name)
        _, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, hard))
    if config.get("file_size_limit") is not None and hasattr(signal, "SIGXFSZ"):
        # Without this, writing past the limit kills the kernel instead of raising OSError.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def lower_priority(nice: int) -> None:
    """Run this process at niceness ``nice`` (never higher priority than now).

    Linux groups the processes of each session for scheduling (autogroup), and
    a kernel has its own session, so the group's niceness is what counts
    against the notebook; the process's own niceness counts elsewhere. Both
    are set, as far as allowed. (Forked kernels get it before they start,
    from the template.)
    """
    import os

    if not hasattr(os, "nice"):  # Windows
        return
    try:
        current = os.nice(0)
        if nice > current:
            os.nice(nice - current)
    except OSError:
        pass
    try:
        with open("/proc/self/autogroup", "w") as autogroup:
            autogroup.write(str(nice))
    except OSError:  # no autogroup here, or not allowed to change it
        pass


def _become_subreaper() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def install(config: dict) -> None:
    """Set up the kernel for tools. Called once, right after this module is run."""
    CONFIG.update(config)
    _become_subreaper()
    shell = _shell()
    OUTPUT["shell"] = shell
    _guard_messages(shell)
    if _thread_parents_supported():  # otherwise output cannot be stamped per thread
        _attribute_threads()
        _take_over_fd_output()
        _quiet_late_processes()
    _refuse_gui_loops(shell)
    namespace = shell.user_ns
    sys.meta_path.insert(0, PatchOnImport())
    for bound_as, name in LAZY_NAMES.items():
        # Only the top package is looked for: finding a submodule imports its parent.
        if importlib.util.find_spec(name.partition(".")[0]) is not None:
            namespace[bound_as] = LazyModule(name, bound_as)
    # By name, so matplotlib is not imported for it.
    shell.display_formatter.formatters["image/png"].for_type_by_name(
        "matplotlib.figure", "Figure", _format_figure
    )
    shell.display_formatter.formatters["image/jpeg"].for_type_by_name(
        "matplotlib.figure", "Figure", _format_figure_jpeg
    )
    try:
        exec("from PIL import Image", namespace)  # cheap, and bind_inputs needs it anyway
        _patch_pil(shell)
    except ImportError:
        pass
    shell.events.register("pre_run_cell", _before_cell)
    shell.events.register("post_run_cell", _after_cell)
    # The stand-ins import later, under the limits: numpy, cv2 and pyplot take ~0.5 GB
    # of address space, well within the default 8 GiB.
    _set_limits(config)
    if config.get("nice") is not None:
        lower_priority(config["nice"])


def as_rgb(image):
    """``image`` as an upright 8-bit RGB image, as the model is shown it.

    Transparency is flattened on white, 16-bit and float gray is scaled to 8 bits,
    gray and palette images get three equal channels: tools written for photos
    (``h, w, c = arr.shape``, ``reshape(-1, 3)``) then work on every input.
    """
    from PIL import Image, ImageOps

    if image.getexif().get(0x0112, 1) > 1:
        image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        import numpy as np

        values = np.asarray(image, dtype=np.float64)
        top = float(values.max()) if values.size else 0.0
        if image.mode == "F" and top <= 1.0:
            values = values * 255.0
        elif image.mode != "F" and (image.mode.startswith("I;16") or top > 255):
            values = values / 257.0
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
    if "A" in image.mode.upper() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


#: File name endings by format, as the parent names input files (``ImageInput.file_name``).
INPUT_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "GIF": ".gif", "WEBP": ".webp"}


def _write_input_file(name: str, source, image_format) -> None:
    """Put an input that came as bytes (no shared file system: a gateway's kernel)
    in the working folder by the name the prompt gives, as the parent does for files."""
    source.seek(0)
    try:
        with open(name + INPUT_SUFFIXES.get(image_format, ".img"), "wb") as file:
            file.write(source.read())
    except OSError as exc:  # a read-only working folder: the variable still works
        print(f"[pyvision] could not write {name}'s file: {exc}", file=sys.stderr)


def bind_inputs(items: list) -> str:
    """Bind ``[(name, path or file object), ...]`` as RGB PIL images (see
    :func:`as_rgb`), and the file as decoded as ``<name>_original``; later images
    number after them."""
    from PIL import Image

    namespace = _shell().user_ns
    for name, path in items:
        with Image.open(path) as image:
            image.load()
            # A memory-mapped image would keep the file open; a copy does not.
            original = image.copy() if image.readonly else image
            image_format = image.format
        if not isinstance(path, (str, os.PathLike)):
            _write_input_file(name, path, image_format)
        namespace[name] = as_rgb(original)
        namespace[name + "_original"] = original
    STATE["next_index"] = len(items)
    return json.dumps([name for name, _ in items])


def probe_libraries(candidates: list) -> str:
    """Which of ``[(import name, distribution), ...]`` can be imported, with versions.

    Nothing is imported, and distribution metadata comes before ``__version__``,
    so the parent gets the same answer when it probes its own interpreter.
    """
    import importlib.metadata
    import importlib.util
    import shutil

    found = []
    for module_name, distribution in candidates:
        try:
            if importlib.util.find_spec(module_name) is None:
                continue
        except (ImportError, ValueError):
            continue
        if module_name == "pytesseract" and shutil.which("tesseract") is None:
            continue
        version = None
        for dist in [distribution] if isinstance(distribution, str) else distribution:
            try:
                version = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                pass
        version = version or getattr(sys.modules.get(module_name), "__version__", None)
        found.append(f"{module_name} {version}" if version else module_name)
    return json.dumps(found)


def interpreter() -> str:
    """The Python running this kernel: ``{"executable": ..., "version": ..., "paths": ...}``.

    ``paths`` are the folders whose names the parent shortens in what the model
    reads (see ``_output.PathShortener``): ``packages`` (import roots), ``prefixes``
    (the interpreter's), ``home`` and ``cwd`` (the working folder).
    """
    import platform

    # sys.path holds the standard library and every site-packages folder in use.
    paths = {
        "packages": sorted({os.path.normpath(entry) for entry in sys.path
                            if entry and os.path.isabs(entry)}),
        "prefixes": sorted({sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}),
        "home": os.path.expanduser("~"),
        "cwd": os.getcwd(),
    }
    return json.dumps({"executable": sys.executable, "version": platform.python_version(),
                       "paths": paths})
