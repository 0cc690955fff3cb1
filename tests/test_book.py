"""The course book (`make book`) in headless Chromium (system /usr/bin/chromium through Playwright): the landing page
and a lesson load with every image, style and script from the book itself, their internal links resolve, MathJax
typesets offline, search finds a lesson, and no request goes to another host. Screenshots of both pages are written
to figures/ (``$PRODVISION_FIGURES`` under ``make test``)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from prodvision.paths import figures_dir

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BUILT = ROOT / "_build" / "html"  # make book's output; `make book` touches .prodvision-built when it succeeds
LESSON = "notebooks/08_gradcam.html"
LOCAL = ("file", "data", "blob", "about")  # URL schemes that never leave the machine


def _newest_source() -> float:
    """The latest change to anything the book is built from (the generated docs/api/ pages excepted)."""
    files = [ROOT / "README.md", *ROOT.glob("docs/**/*"), *ROOT.glob("notebooks/[0-9][0-9]_*.ipynb"),
             *ROOT.glob("prodvision/**/*.py"), *ROOT.glob("figures/*.png")]
    return max(f.stat().st_mtime for f in files if f.is_file() and f.relative_to(ROOT).parts[:2] != ("docs", "api"))


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    """`make book`'s output if it is newer than every source, else a fresh build with warnings as errors."""
    done = BUILT / ".prodvision-built"
    if done.exists() and done.stat().st_mtime > _newest_source():
        return BUILT
    out = tmp_path_factory.mktemp("book") / "html"
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-c", "docs", "-W", "--keep-going", "-q", ".",
                        str(out)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, f"the book does not build without warnings:\n{r.stdout}\n{r.stderr}"
    print(f"book built in {time.perf_counter() - start:.0f} s")
    return out


@pytest.fixture(scope="module")
def browser(chromium):
    """conftest's headless Chromium (the system package, no browser download)."""
    return chromium


def _is_local(url: str) -> bool:
    u = urlparse(url)
    return u.scheme in LOCAL or (u.scheme in ("http", "https", "ws", "wss")
                                 and u.hostname in ("127.0.0.1", "localhost"))


def _visit(browser, book: Path, page_path: str, query: str = ""):
    """Open ``page_path`` of the book from file:// and return the page with what happened while it loaded.
    Requests to any other host are aborted, so the test cannot reach the network even on a machine that could."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    events = {"requests": [], "failed": [], "errors": []}
    context.route("**/*", lambda route: route.continue_() if _is_local(route.request.url) else route.abort())
    page = context.new_page()
    page.on("request", lambda r: events["requests"].append(r.url))
    page.on("requestfailed", lambda r: events["failed"].append(f"{r.url} ({r.failure})"))
    page.on("response", lambda r: r.status >= 400 and events["failed"].append(f"{r.url} (HTTP {r.status})"))
    page.on("pageerror", lambda e: events["errors"].append(str(e)))
    page.goto((book / page_path).as_uri() + query, wait_until="load")
    page.wait_for_load_state("networkidle")
    return page, events


def _check_loaded(page, events, book: Path) -> list[str]:
    """Everything the page shows came from the book: no failed request, no request off the machine, every image
    decoded, every link to another page of the book pointing at a file that exists (and a same-page anchor at an
    element that exists). Returns the problems."""
    problems = [f"request failed: {f}" for f in events["failed"]]
    problems += [f"request off the machine: {u}" for u in events["requests"] if not _is_local(u)]
    problems += [f"script error: {e}" for e in events["errors"]]
    images = page.evaluate("[...document.images].map((im) => [im.currentSrc || im.src, im.complete, im.naturalWidth])")
    problems += [f"image not shown: {src}" for src, complete, width in images if not (complete and width > 0)]
    here = Path(unquote(urlparse(page.url).path))
    for href in page.evaluate("[...document.querySelectorAll('a[href]')].map((a) => a.href)"):
        u = urlparse(href)
        if u.scheme != "file":
            continue  # a link to a web page elsewhere is a link, not a request; requests are checked above
        target = Path(unquote(u.path))
        target = target / "index.html" if href.split("#")[0].endswith("/") else target
        if not target.is_file():
            problems.append(f"broken link: {href}")
        elif not target.resolve().is_relative_to(book.resolve()):
            problems.append(f"link out of the book: {href}")
        elif target == here and u.fragment and not page.evaluate("(id) => !!document.getElementById(id)",
                                                                 unquote(u.fragment)):
            problems.append(f"no element with id {u.fragment!r} on this page")
    return problems


def _screenshot(page, name: str) -> Path:
    out = figures_dir() / name  # make test points $PRODVISION_FIGURES at a scratch folder
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out))
    assert out.stat().st_size > 10_000
    return out


def _lesson_links(page) -> list[str]:
    return page.evaluate("[...document.querySelectorAll('.bd-sidebar-primary nav a')].map((a) => a.href)"
                         ".filter((h) => /\\/notebooks\\/\\d\\d_/.test(h))")


def test_landing_page(book, browser):
    """The root index opens the README-derived landing page: its gallery, tables and navigation by lesson."""
    page, events = _visit(browser, book, "index.html")
    try:
        page.wait_for_url("**/docs/index.html")
        page.wait_for_load_state("networkidle")
        assert page.locator("h1").first.inner_text().startswith("prodvision")
        assert page.locator("article table").count() >= 3  # the README's tables: notebooks, gallery, results
        assert page.evaluate("document.querySelectorAll('article img').length") >= 9  # the gallery
        notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
        assert [Path(urlparse(h).path).stem for h in _lesson_links(page)] == notebooks, "every lesson, in order"
        nav = page.inner_text(".bd-sidebar-primary")
        assert "Syllabus" in nav and "API reference" in nav and "Deployment" in nav
        problems = _check_loaded(page, events, book)
        assert not problems, problems
        _screenshot(page, "book_index.png")
    finally:
        page.context.close()


def test_lesson_page(book, browser):
    """Lesson 08 with its committed figures, its maths typeset by the bundled MathJax, and a way to every lesson."""
    page, events = _visit(browser, book, LESSON)
    try:
        assert page.locator("h1").first.inner_text().startswith("08 · Grad-CAM")
        page.wait_for_function("document.querySelectorAll('mjx-container').length > 0", timeout=20_000)
        assert page.evaluate("document.querySelectorAll('mjx-merror').length") == 0, "a formula MathJax cannot read"
        assert page.locator(".cell_output img").count() >= 3, "the notebook's figures, from its committed outputs"
        assert len(_lesson_links(page)) == len(list((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")))
        problems = _check_loaded(page, events, book)
        assert not problems, problems
        page.evaluate("document.querySelector('.cell_output img').scrollIntoView({block: 'center'})")
        page.wait_for_timeout(300)
        _screenshot(page, "book_lesson.png")
    finally:
        page.context.close()


def _with_maths() -> list[str]:
    import json

    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    return [nb.stem for nb in notebooks if any("$" in "".join(c["source"]) for c in json.loads(nb.read_text())["cells"]
                                               if c["cell_type"] == "markdown")]


STRAY_DOLLARS = """(() => { const a = document.querySelector('article').cloneNode(true);
    a.querySelectorAll('pre, code, mjx-container, .cell_output').forEach((e) => e.remove());
    return a.innerText.split('$').length - 1; })()"""


@pytest.mark.parametrize("stem", _with_maths())
def test_maths_is_typeset(book, browser, stem):
    """Every $...$ and $$...$$ of a lesson's text is typeset by the bundled MathJax (lesson 01 has $$ inside a
    paragraph): none is left as raw dollars, none is a MathJax error."""
    page, events = _visit(browser, book, f"notebooks/{stem}.html")
    try:
        page.wait_for_function("document.querySelectorAll('mjx-container').length > 0", timeout=20_000)
        page.wait_for_function("!document.querySelector('.math:not(:has(mjx-container))')", timeout=20_000)
        assert page.evaluate("document.querySelectorAll('mjx-merror').length") == 0
        assert page.evaluate(STRAY_DOLLARS) == 0, "a formula left as text"
        assert not [u for u in events["requests"] if not _is_local(u)]
    finally:
        page.context.close()


def test_syllabus_page(book, browser):
    """The syllabus links every lesson and its weeks' anchors exist (MyST and GitHub give headings the same ids)."""
    page, events = _visit(browser, book, "docs/syllabus.html")
    try:
        linked = {Path(urlparse(h).path).stem for h in page.evaluate(
            "[...document.querySelectorAll('article a[href]')].map((a) => a.href)") if "/notebooks/" in h}
        assert linked == {p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
        problems = _check_loaded(page, events, book)
        assert not problems, problems
    finally:
        page.context.close()


def test_search_finds_lessons_offline(book, browser):
    """Sphinx's own search (an index file, no server): a lesson's subject finds the lesson."""
    page, events = _visit(browser, book, "search.html", "?q=FedProx")
    try:
        results = page.locator("#search-results li a")
        results.first.wait_for(timeout=20_000)
        hrefs = [results.nth(i).get_attribute("href") for i in range(results.count())]
        assert any("10_federated_learning" in h for h in hrefs), hrefs
        assert not [u for u in events["requests"] if not _is_local(u)]
    finally:
        page.context.close()


def test_api_reference_has_a_page_per_module(book):
    import pkgutil

    import prodvision

    modules = [m.name for m in pkgutil.walk_packages(prodvision.__path__, "prodvision.")
               if not m.name.endswith("__main__")]
    missing = [m for m in modules if not (book / "docs" / "api" / f"{m}.html").is_file()]
    assert not missing, missing
    page = (book / "docs" / "api" / "prodvision.explain.html").read_text(encoding="utf-8")
    assert 'id="prodvision.explain.sanity_check"' in page  # documented from its docstring
