"""Build helpers of the documentation site, loaded by ``mkdocs.yml``.

- :class:`ConvkitDocstrings`, a griffe extension: the docstrings are numpydoc, read
  by ``help()`` as well as by the site, so they keep Sphinx roles
  (``:func:`conv```) and the ops gain their ``backend=`` keyword only when
  ``convkit`` is imported; the extension renders the roles as cross-references
  and gives the ops the signature and docstring users get at run time.
- ``on_page_content`` / ``on_post_build``, mkdocs hooks: docstrings link to the
  published site (``site_url``) so that a pip install can follow them; the site
  itself turns those links relative, so a local build links to itself, and
  fails the strict build on a link to a page or anchor it does not have.
"""

from __future__ import annotations

import html.parser
import inspect
import logging
import posixpath
import re
from pathlib import Path
from urllib.parse import urlsplit

import griffe

# Under "mkdocs.": a warning here fails `mkdocs build --strict`.
log = logging.getLogger("mkdocs.hooks.convkit")

_ROLE = re.compile(r":(?:py:)?(func|class|meth|mod|data|attr|exc|obj):`(~?)([\w.]+)`")


def _resolve(obj: griffe.Object, name: str, function: bool) -> str:
    """The full path ``name`` means in ``obj``'s scope (``name`` itself if griffe cannot tell)."""
    head, _, rest = name.partition(".")
    try:
        path = obj.resolve(head) + (f".{rest}" if rest else "")
    except (griffe.NameResolutionError, ValueError):
        path = name
    if function:
        # convkit.conv is a module to griffe, the function it defines to Python (convkit/__init__.py)
        last = path.rsplit(".", 1)[-1]
        try:
            target = obj.modules_collection[path]
            if target.is_module and last in target.members and target.members[last].is_function:
                return f"{path}.{last}"
        except (KeyError, ValueError, griffe.AliasResolutionError):
            pass
    return path


def _roles_to_refs(obj: griffe.Object, text: str) -> str:
    def ref(m):
        role, tilde, name = m.groups()
        title = name.rsplit(".", 1)[-1] if tilde else name
        identifier = _resolve(obj, name, role in ("func", "meth"))
        # optional: a role naming an object the site does not document renders as code, not a broken link
        return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'
    return _ROLE.sub(ref, text)


class ConvkitDocstrings(griffe.Extension):
    """Sphinx roles to autorefs cross-references; the run-time signature and docstring where import changes them."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        self._walk(pkg, pkg, set())

    def _walk(self, obj: griffe.Object, pkg: griffe.Module, seen: set) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.is_function or obj.is_attribute:
            obj = _as_at_run_time(obj, pkg)
        if obj.docstring is not None:
            obj.docstring.value = _roles_to_refs(obj, obj.docstring.value)
        for member in list(obj.members.values()):
            if not member.is_alias:
                self._walk(member, pkg, seen)


def _as_at_run_time(obj, pkg):
    """``obj``, or a function made from what importing it gives where that differs.

    ``convkit.dispatch.accepts_backend`` adds the ops' ``backend=`` parameter and
    its docstring entry at import time, and ``conv1d``-``conv3d`` are made by a
    factory: the source alone shows neither.
    """
    if obj.parent is None or not obj.parent.is_module:
        return obj
    # only a decorated function or a value a call makes can differ; importing every module is slow
    if not (obj.is_function and obj.decorators or obj.is_attribute and isinstance(obj.value, griffe.ExprCall)):
        return obj
    try:
        runtime = griffe.dynamic_import(obj.path)
    except ImportError:
        return obj
    if obj.is_attribute and isinstance(runtime, (tuple, frozenset)) and all(isinstance(v, str) for v in runtime):
        obj.value = repr(runtime)  # KERNELS: the names, not the expression that makes them
        return obj
    if not inspect.isfunction(runtime):
        return obj
    sig = inspect.signature(runtime)
    doc = inspect.cleandoc(runtime.__doc__ or "")
    if obj.is_function and list(sig.parameters) == [p.name for p in obj.parameters] and \
            doc == (obj.docstring.value if obj.docstring else ""):
        return obj
    params = [griffe.Parameter(p.name, kind=griffe.ParameterKind[p.kind.name.lower()],
                               annotation=obj.parameters[p.name].annotation
                               if obj.is_function and p.name in obj.parameters else None,
                               default=None if p.default is p.empty else repr(p.default))
              for p in sig.parameters.values()]
    func = griffe.Function(obj.name, parameters=griffe.Parameters(*params), lineno=obj.lineno,
                           endlineno=obj.endlineno, returns=obj.returns if obj.is_function else None)
    func.docstring = griffe.Docstring(doc, parent=func, parser=pkg.docstring.parser,
                                      parser_options=pkg.docstring.parser_options)
    obj.parent.set_member(obj.name, func)
    return func


def on_page_content(html_text, page, config, files):
    """Links to the published site (``site_url``), as docstrings write them, made relative to this page."""
    base = config["site_url"]

    # the folder this page is served from (page.url: "", "spec/", or "spec.html" without directory URLs)
    here = page.url if page.url.endswith("/") else posixpath.dirname(page.url)

    def relative(m):
        path, sep, anchor = m["url"][len(base):].partition("#")
        rel = posixpath.relpath(path or ".", here or ".")
        rel += "/" if path.endswith("/") or not path else ""
        return f'href="{rel}{sep}{anchor}"'

    return re.sub(r'href="(?P<url>' + re.escape(base) + r'[^"]*)"', relative, html_text)


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])


def broken_links(site_dir: str | Path) -> list[str]:
    """Links between the site's pages, in ``site_dir``, to a page or anchor that is not there."""
    site_dir = Path(site_dir)
    pages = {}
    for f in site_dir.rglob("*.html"):
        if f.name == "404.html":  # served at any depth, so its links are absolute
            continue
        parser = _Links()
        parser.feed(f.read_text(encoding="utf-8"))
        pages[f] = parser
    broken = []
    for f, parser in pages.items():
        for href in parser.hrefs:
            parts = urlsplit(href)
            if parts.scheme or parts.netloc or href.startswith(("mailto:", "javascript:")):
                continue
            target = (f.parent / parts.path).resolve() if parts.path else f
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{f.relative_to(site_dir)}: {href}: no such page")
            elif parts.fragment and target in pages and parts.fragment not in pages[target].ids:
                broken.append(f"{f.relative_to(site_dir)}: {href}: no such anchor")
    return broken


def on_post_build(config):
    for problem in broken_links(config["site_dir"]):
        log.warning("broken link: %s", problem)
