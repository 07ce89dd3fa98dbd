"""Which earlier tools a tool's code needs, read from the code alone.

A tool runs in a kernel where earlier turns' tools ran first, so it may use a
name one of them defined (``mask``, ``def measure``). Copied into a notebook on
its own it would raise NameError. :func:`turns_needed` finds, without running
anything, the earlier turns whose top-level definitions the code uses, and the
turns those need in turn.

It reads names the way Python binds them, approximately: a name counts as
defined by a turn when its module level binds it (assignment, ``def``,
``class``, ``import``, ``for``/``with`` targets, ``except ... as``, ``:=``),
and as used by a tool when the tool reads it before binding it (see
:func:`free_names`). Code that does not parse needs nothing.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterable, Sequence

__all__ = ["free_names", "module_names", "turns_needed"]

_BUILTINS = frozenset(dir(builtins))


def _parse(code: str | None) -> ast.Module | None:
    """``code`` as a tree; IPython syntax (``!ls``, ``%time``) read as IPython runs it."""
    if not code:
        return None
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError):
        pass
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return ast.parse(TransformerManager().transform_cell(code))
    except Exception:  # noqa: BLE001 - no IPython, or not Python even for IPython
        return None


def _bound_by(node: ast.AST) -> Iterable[str]:
    """Names ``node`` itself binds in the scope it sits in."""
    if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
        yield node.id
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        yield node.name
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
        for alias in node.names:
            if alias.name != "*":
                yield alias.asname or alias.name.split(".")[0]
    elif isinstance(node, ast.ExceptHandler) and node.name:
        yield node.name
    elif isinstance(node, ast.arg):
        yield node.arg
    elif type(node).__name__ in ("MatchAs", "MatchStar") and getattr(node, "name", None):
        yield node.name  # type: ignore[attr-defined]
    elif type(node).__name__ == "MatchMapping" and getattr(node, "rest", None):
        yield node.rest  # type: ignore[attr-defined]


def _read(code: str | None) -> _Reader:
    reader = _Reader()
    tree = _parse(code)
    if tree is not None:
        reader.statements(tree.body)
    return reader


def module_names(code: str | None) -> set[str]:
    """Names the module level of ``code`` binds (what it leaves in the kernel)."""
    return _read(code).bound


def free_names(code: str | None) -> set[str]:
    """Names ``code`` reads before it binds them, builtins left out.

    Module-level statements are followed in order (``mask = mask & edges``
    reads the ``mask`` an earlier tool left); a function's body reads its
    names when it is called, so there a name counts only if the code binds
    it nowhere.
    """
    return _read(code).needs()


class _Reader:
    """Follows module-level statements in the order they run."""

    def __init__(self) -> None:
        self.bound: set[str] = set()
        self.free: set[str] = set()
        self.later: set[str] = set()  # read by function bodies, when they are called

    def needs(self) -> set[str]:
        """Names the code reads and does not bind first, builtins left out."""
        return (self.free | (self.later - self.bound)) - _BUILTINS

    def read(self, name: str) -> None:
        if name not in self.bound:
            self.free.add(name)

    def expression(self, node: ast.AST | None) -> None:
        """Reads in ``node`` happen now; a ``:=`` in it binds afterwards."""
        if node is None:
            return
        binds: list[str] = []
        stack = [node]
        while stack:
            item = stack.pop()
            if isinstance(item, ast.Lambda):
                self.deferred(item)
                stack.extend(item.args.defaults + [d for d in item.args.kw_defaults if d])
            elif isinstance(item, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
                own = {n.id for g in item.generators for n in ast.walk(g.target)
                       if isinstance(n, ast.Name)}
                for inner in ast.walk(item):
                    if isinstance(inner, ast.Name) and isinstance(inner.ctx, ast.Load) \
                            and inner.id not in own:
                        self.read(inner.id)
                    elif isinstance(inner, ast.NamedExpr) and isinstance(inner.target, ast.Name):
                        binds.append(inner.target.id)
            elif isinstance(item, ast.Name):
                if isinstance(item.ctx, ast.Store):
                    binds.append(item.id)
                else:  # a load, or a del (which needs the name to exist)
                    self.read(item.id)
            else:
                stack.extend(ast.iter_child_nodes(item))
        self.bound.update(binds)

    def deferred(self, scope: ast.AST) -> None:
        read = {n.id for n in ast.walk(scope)
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        own: set[str] = set()
        for node in ast.walk(scope):
            own.update(_bound_by(node))
        self.later |= read - own

    def statements(self, body: list[ast.stmt]) -> None:
        for statement in body:
            self.statement(statement)

    def statement(self, node: ast.stmt) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for item in node.decorator_list + node.args.defaults + node.args.kw_defaults:
                self.expression(item)
            self.deferred(node)
            self.bound.add(node.name)
        elif isinstance(node, ast.ClassDef):
            for item in node.decorator_list + node.bases:
                self.expression(item)
            self.deferred(node)
            self.bound.add(node.name)
        elif isinstance(node, ast.Assign):
            self.expression(node.value)
            for target in node.targets:
                self.expression(target)
        elif isinstance(node, ast.AugAssign):
            if isinstance(node.target, ast.Name):
                self.read(node.target.id)
            self.expression(node.value)
            self.expression(node.target)
        elif isinstance(node, ast.AnnAssign):
            self.expression(node.value)
            if node.value is not None:
                self.expression(node.target)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            self.expression(node.iter)
            self.expression(node.target)
            self.statements(node.body)
            self.statements(node.orelse)
        elif isinstance(node, (ast.While, ast.If)):
            self.expression(node.test)
            self.statements(node.body)
            self.statements(node.orelse)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                self.expression(item.context_expr)
                self.expression(item.optional_vars)
            self.statements(node.body)
        elif isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            self.statements(node.body)  # type: ignore[attr-defined]
            for handler in node.handlers:  # type: ignore[attr-defined]
                self.expression(handler.type)
                if handler.name:
                    self.bound.add(handler.name)
                self.statements(handler.body)
            self.statements(node.orelse)  # type: ignore[attr-defined]
            self.statements(node.finalbody)  # type: ignore[attr-defined]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            self.bound.update(_bound_by(node))
        elif type(node).__name__ == "Match":
            self.expression(node.subject)  # type: ignore[attr-defined]
            for case in node.cases:  # type: ignore[attr-defined]
                for inner in ast.walk(case.pattern):
                    if isinstance(inner, ast.Name) and isinstance(inner.ctx, ast.Load):
                        self.read(inner.id)
                    self.bound.update(_bound_by(inner))
                self.expression(case.guard)
                self.statements(case.body)
        else:  # expressions, return, raise, assert, del, global, ...
            self.expression(node)


def turns_needed(codes: Sequence[str | None], code: str | None,
                 known: Iterable[str] = ()) -> list[tuple[int, list[str]]]:
    """The earlier tools ``code`` needs: ``(index into codes, names it gives)``.

    ``codes`` are the earlier tools, oldest first. A name is looked for in the
    latest earlier tool that defines it, as the kernel would have it; names in
    ``known`` are there already. The result is in the order the tools ran.
    """
    known = set(known)
    wanted = free_names(code) - known
    needed: list[tuple[int, list[str]]] = []
    for index in range(len(codes) - 1, -1, -1):
        if not wanted:
            break
        reader = _read(codes[index])
        defined = reader.bound & wanted
        if defined:
            needed.append((index, sorted(defined)))
            wanted -= defined
            wanted |= reader.needs() - known
    return needed[::-1]
