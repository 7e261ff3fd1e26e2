"""The documentation site (mkdocs.yml): it builds with warnings as errors and holds what it promises."""

import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import convkit

ROOT = Path(__file__).resolve().parent.parent
SITE_URL = re.search(r"^site_url:\s*(\S+)", (ROOT / "mkdocs.yml").read_text(), re.M).group(1)

_spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "mkdocs_hooks.py")
hooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hooks)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    # built outside the repository: pytest collects docs/ and must not find the site there
    out = tmp_path_factory.mktemp("site")
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                         cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
                         timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return out


def page(site, name):
    return (site / name / "index.html" if name else site / "index.html").read_text(encoding="utf-8")


def section(html, anchor):
    """The HTML of the API entry whose heading has id ``anchor``, up to the next entry of its level."""
    start = html.index(f'id="{anchor}"')
    level = html.rfind("<h", 0, start)
    tag = html[level + 1:level + 3]
    end = html.find(f"<{tag} id=", start)
    return html[start:end if end > 0 else len(html)]


def test_every_docs_page_is_on_the_site(site):
    pages = sorted(p.stem for p in (ROOT / "docs").glob("*.md"))
    assert {"index", "spec", "plugins", "conformance", "benchmarks", "performance", "c_backend",
            "cython_backend", "numba_backend", "api"} <= set(pages)
    for name in pages:
        title = re.search(r"^# (.+)$", (ROOT / "docs" / f"{name}.md").read_text(), re.M)
        html = page(site, "" if name == "index" else name)
        if title:
            assert re.sub(r"`([^`]*)`", r"<code>\1</code>", title.group(1)) in html, name


def test_home_page_is_the_readme(site):
    html = page(site, "")
    assert "Convolution and pooling kernels for NumPy" in html and 'id="quick-start"' in html
    # the README's links into docs/ are rewritten to the site's pages
    assert 'href="spec/"' in html and "docs/spec.md" not in re.findall(r'href="([^"]*)"', html)


def test_api_reference_documents_every_public_name(site):
    html = page(site, "api")
    ids = set(re.findall(r'<h[1-6] id="([^"]+)"', html))
    missing = [name for name in convkit.__all__
               if f"convkit.{name}" not in ids
               and f"{getattr(getattr(convkit, name), '__module__', None)}.{name}" not in ids]
    assert not missing


def test_api_reference_renders_conv_parameters_and_examples(site):
    html = section(page(site, "api"), "convkit.conv.conv")
    params = html[html.index("Parameters:"):html.index("Returns:")]
    for name in inspect.signature(convkit.conv).parameters:  # `backend` is added at import time
        assert f"<b><code>{name}</code></b>" in params, name
    assert "(see <autoref" not in html and "<code>array_like</code>" in params
    examples = html[html.index("Examples:"):]
    assert '<code><span class="gp">&gt;&gt;&gt; </span>' in examples  # a highlighted doctest, its output below
    assert "&gt;&gt;&gt; conv(x, w, padding=2, flip=True)[0, 0].tolist()\n[5.0, 14.0, 16.0" in re.sub(
        r"<[^>]+>", "", examples)
    # the docstring's link to the published spec points to the local page
    assert 'href="../spec/#padding-forms"' in params
    # a Sphinx role in a docstring becomes a link to what it names
    assert re.search(r'<a class="autorefs autorefs-internal"[^>]*href="#convkit.conv.conv"><code>conv</code></a>',
                     section(page(site, "api"), "convkit.conv1d"))


def test_internal_links_resolve(site):
    assert hooks.broken_links(site) == []


def test_broken_links_finds_missing_pages_and_anchors(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "index.html").write_text('<h2 id="here"></h2><a href="#here"></a><a href="../b/"></a>'
                                               '<a href="#gone"></a><a href="https://example.org/x"></a>')
    (tmp_path / "index.html").write_text('<a href="a/#here"></a><a href="a/#nowhere"></a>')
    assert sorted(hooks.broken_links(tmp_path)) == ["a/index.html: #gone: no such anchor",
                                                    "a/index.html: ../b/: no such page",
                                                    "index.html: a/#nowhere: no such anchor"]


def test_site_address_is_defined_alike_and_every_link_to_it_resolves(site):
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^Documentation = "([^"]+)"', pyproject, re.M).group(1) == SITE_URL
    sources = [*ROOT.glob("convkit/**/*.py"), *ROOT.glob("backends/**/*.py"), ROOT / "README.md"]
    links = {m for f in sources for m in re.findall(re.escape(SITE_URL) + r"[\w/#.-]*[\w/]", f.read_text())}
    assert len(links) >= 5
    probe = site / "_links.html"  # a page at the site's root linking where the sources do
    probe.write_text("".join(f'<a href="{link[len(SITE_URL):] or "./"}"></a>' for link in sorted(links)))
    try:
        assert hooks.broken_links(site) == []
    finally:
        probe.unlink()


def test_public_docstrings_point_to_the_site_not_to_files_a_pip_install_lacks():
    docs = {name: inspect.getdoc(getattr(convkit, name)) or "" for name in convkit.__all__}
    docs["convkit"] = convkit.__doc__
    assert not {name for name, doc in docs.items() if "course notes" in doc or re.search(r"docs/\w+\.md", doc)}
    assert SITE_URL + "spec/#output-size" in docs["conv"]
