"""One browser test: the review page in headless Chromium (Debian's, driven by Playwright) against a real server:
log in, record a verdict by clicking, check it reached the audit table, and save a screenshot of the page
(``test-artifacts/review-page.png``). Skipped where /usr/bin/chromium or playwright is absent."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import FAST_MATCHER
from service_support import TOKEN, free_port, many_faces_png, orl_bytes, start_server, stop_server

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install chromium)")
IMAGES_LOADED = "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"


def wait_for_images(page, seconds: float = 30.0) -> None:
    """Until every image of the page has loaded. Polled from here with ``page.evaluate``: Playwright's
    ``wait_for_function`` evaluates its predicate again with ``eval`` in the page whenever the first check fails,
    which the page's Content-Security-Policy (``script-src 'self'``) rightly refuses (seen on a loaded machine)."""
    deadline = time.monotonic() + seconds
    while not page.evaluate(IMAGES_LOADED):
        if time.monotonic() > deadline:
            raise AssertionError(f"the page's images did not load within {seconds} s")
        page.wait_for_timeout(100)


@contextmanager
def served_page(db: str, tmp_path: Path, height: int) -> Iterator[tuple[object, int]]:
    """A real ``lookalike serve`` of ``db`` and a headless Chromium page 1280 px wide (and its port), both stopped
    after."""
    sync_api = pytest.importorskip("playwright.sync_api")
    port = free_port()
    proc = start_server(db, tmp_path / "images", port, log=tmp_path / "server.log")
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            yield browser.new_page(viewport={"width": 1280, "height": height}), port
            browser.close()
    finally:
        stop_server(proc)


def test_review_page_in_a_browser(orl_dir: Path, tmp_path: Path):
    pytest.importorskip("playwright.sync_api")
    from lookalike.gallery import Gallery, open_store
    from lookalike.service.core import Service, Upload

    db = str(tmp_path / "g.sqlite")
    Gallery.create(db, matcher=FAST_MATCHER).close()
    service = Service(db, data_dir=tmp_path / "images", engines=1)
    try:
        for p in (1, 2, 3, 4, 5, 6):
            service.add_images(f"s{p}", [Upload(f"{i}.pgm", orl_bytes(orl_dir, p, i)) for i in (1, 2)], create=True)
        doc = service.identify(Upload("group.png", many_faces_png(orl_dir)), top=6)
    finally:
        service.close()
    sid = doc["results"][0]["faces"][0]["search_id"]
    top = doc["results"][0]["faces"][0]["candidates"][0]["subject"]

    with served_page(db, tmp_path, height=1000) as (page, port):
        page.goto(f"http://127.0.0.1:{port}/review/{sid}")
        assert "/login" in page.url
        page.fill("input[name=token]", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(f"**/review/{sid}")
        assert page.locator("text=investigative leads, not identifications").count() == 1
        card = page.locator("article.cand").first
        assert not card.locator(".score").is_visible()  # scores hidden until asked for
        page.check("#show-scores")
        assert card.locator(".score").is_visible()
        wait_for_images(page)
        card.locator("input[value=match]").check()
        card.locator("input[name=reviewer]").fill("Examiner B")
        card.locator("textarea[name=note]").fill("clicked in the browser")
        card.locator("button[type=submit]").click()
        page.wait_for_selector("text=Recorded:")
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "review-page.png"
        wait_for_images(page)
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")
    with open_store(db, create=False) as store:
        reviews = store.list_reviews(sid)
    assert [(r.subject, r.verdict, r.reviewer, r.note) for r in reviews] == [
        (top, "match", "Examiner B", "clicked in the browser")]
    assert shot.stat().st_size > 10_000


def test_a_verdict_with_the_keyboard_alone(orl_dir: Path, tmp_path: Path):
    """An examiner without a mouse: the first Tab reaches the skip link, which moves focus into the page; Tab
    through the cards to candidate #3's verdict radios, choose with Space, type the reviewer's name and submit with
    Enter; the page comes back on candidate #3 (its card focused and in view, the confirmation on it), and the next
    Tab stays in that card. Gallery: ORL s30-s35 (other tests use s1-s9)."""
    pytest.importorskip("playwright.sync_api")
    from lookalike.gallery import Gallery, open_store
    from lookalike.service.core import Service, Upload

    db = str(tmp_path / "g.sqlite")
    Gallery.create(db, matcher=FAST_MATCHER).close()
    service = Service(db, data_dir=tmp_path / "images", engines=1)
    try:
        for p in range(30, 36):
            service.add_images(f"s{p}", [Upload(f"{i}.pgm", orl_bytes(orl_dir, p, i)) for i in (1, 2)],
                               precropped=True, create=True)
        doc = service.identify(Upload("probe.pgm", orl_bytes(orl_dir, 31, 6)), top=6, precropped=True)
    finally:
        service.close()
    sid = doc["results"][0]["faces"][0]["search_id"]
    third = doc["results"][0]["faces"][0]["candidates"][2]["subject"]
    active = "(() => { const e = document.activeElement; const c = e.closest('article');" \
             " return [e.tagName, e.id, e.name || '', c ? c.id : '']; })()"

    with served_page(db, tmp_path, height=800) as (page, port):
        page.goto(f"http://127.0.0.1:{port}/login?next=/review/{sid}")
        page.keyboard.type(TOKEN)  # the token field has the focus
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert page.url.endswith(f"/review/{sid}")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to the content"
        page.keyboard.press("Enter")
        assert page.evaluate(active) == ["MAIN", "main", "", ""]
        for _ in range(40):  # the radios of #3: past the toggle, the report link and two cards' controls
            page.keyboard.press("Tab")
            if page.evaluate(active)[2:] == ["verdict", "c3"]:
                break
        assert page.evaluate(active)[2:] == ["verdict", "c3"]
        page.keyboard.press("Space")
        page.keyboard.press("Tab")
        page.keyboard.type("Examiner T")
        with page.expect_navigation():
            page.keyboard.press("Enter")
        page.wait_for_load_state("load")
        assert page.url.endswith(f"/review/{sid}#c3")
        assert page.evaluate(active) == ["ARTICLE", "c3", "", "c3"]
        top = page.evaluate("document.getElementById('c3').getBoundingClientRect().top")
        assert 0 <= top + 1 < 800, top  # in view, not thrown to the top of the page
        assert page.locator("#c3 [role=status]").inner_text().startswith(f"Recorded: {third}")
        page.keyboard.press("Tab")
        assert page.evaluate(active)[3] == "c3"
    with open_store(db, create=False) as store:
        assert [(r.subject, r.verdict, r.reviewer) for r in store.list_reviews(sid)] == [
            (third, "match", "Examiner T")]
