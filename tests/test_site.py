"""The documentation site builds (mkdocs, strict: a broken reference fails the
build) and works opened from disk, as the README says: file://.../index.html.

From file:// a link to a folder (`concepts/`) shows a directory listing, so
every link inside the site must name a file that is there: the pages' own
links, the navigation, the API reference's cross-references, anchors included.
"""

import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from _support import CHROMIUM_ARGS

pytestmark = pytest.mark.slow  # the site built by mkdocs, strict: 4 s

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site, built as `make docs` builds it, into a scratch directory."""
    built = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(built)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return built


class Links(HTMLParser):
    """The href and src values of a page, and the ids its anchors can name."""

    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src") and value is not None:
                self.links.append(value)
            elif name in ("id", "name") and value:
                self.ids.add(value)


def read(page: Path) -> Links:
    parsed = Links()
    parsed.feed(page.read_text(encoding="utf-8"))
    return parsed


def pages(site: Path) -> list[Path]:
    # 404.html is a server's error page, shown at any address: its links start
    # from the site's root on purpose, and nothing links to it.
    return sorted(page for page in site.rglob("*.html") if page.name != "404.html")


def test_every_page_of_the_docs_is_a_file_of_the_site(site):
    for source in DOCS.glob("*.md"):
        assert (site / f"{source.stem}.html").is_file(), source.name
    assert not (site / "concepts").exists()  # pages are files, not folders


def test_every_link_inside_the_site_names_a_file_that_exists(site):
    problems = []
    checked = 0
    for page in pages(site):
        for link in read(page).links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc:
                continue  # outside the site (fonts, the theme's home page)
            where = f"{page.relative_to(site)}: {link}"
            if not parts.path:
                continue  # an anchor of this page: checked below
            if parts.path.endswith("/"):
                problems.append(f"{where} (a folder: a directory listing from disk)")
                continue
            if parts.path.startswith("/"):
                problems.append(f"{where} (from the root of the disk, not of the site)")
                continue
            target = (page.parent / unquote(parts.path)).resolve()
            if not target.is_file():
                problems.append(f"{where} (no such file)")
            checked += 1
    assert problems == []
    assert checked > 100  # the navigation alone links every page from every page


def test_every_anchor_a_link_names_is_on_its_page(site):
    """The pages' links to sections of each other (`durable.html#writing-a-store`)
    and within a page, the API reference's table of contents among them."""
    ids = {page: read(page).ids for page in pages(site)}
    problems, checked = [], set()
    for page in ids:
        for link in read(page).links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or not parts.fragment or parts.path.endswith("/"):
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.suffix == ".html" and unquote(parts.fragment) not in ids.get(target, set()):
                problems.append(f"{page.relative_to(site)}: {link}")
            checked.add(link)
    assert problems == []
    assert any(link.startswith("#braidflow.") for link in checked)  # the API reference
    assert any(".html#" in link for link in checked)  # from one page to another


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NAVIGATION = "nav.md-nav--primary a.md-nav__link"  # the theme's links to the pages


@pytest.mark.browser
@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("BRAIDFLOW_REQUIRE_BROWSER"),
    reason="no chromium here (Debian: apt-get install chromium)",
)
def test_a_reader_opening_index_html_from_disk_can_follow_the_navigation(site):
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto((site / "index.html").as_uri())
            for title, file in (("Concepts", "concepts.html"), ("API reference", "reference.html")):
                page.locator(NAVIGATION, has_text=title).first.click()
                page.wait_for_load_state()
                assert page.url == (site / file).as_uri()
                assert page.locator("h1").first.inner_text().startswith(title)
        finally:
            browser.close()
