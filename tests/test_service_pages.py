"""The examiner's pages through FastAPI's TestClient: login (session cookie), CSRF on every form, the review page
with its verdict form, identify and enrol pages; plus one test of the service with a trained lookalike model."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_MATCHER
from service_support import TOKEN, many_faces_png, orl_bytes, png_copy

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

import lookalike  # noqa: E402
from lookalike.gallery import Gallery  # noqa: E402
from lookalike.service.app import create_app  # noqa: E402
from lookalike.service.auth import TokenChecker  # noqa: E402
from lookalike.service.core import Service, Upload  # noqa: E402


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


@pytest.fixture(scope="module")
def site(orl_dir: Path, tmp_path_factory):
    root = tmp_path_factory.mktemp("pages")
    Gallery.create(root / "g.sqlite", matcher=FAST_MATCHER).close()
    service = Service(str(root / "g.sqlite"), data_dir=root / "images", engines=1)
    for p in (1, 2, 3):
        service.add_images(f"s{p}", [Upload("1.pgm", orl_bytes(orl_dir, p, 1))], create=True)
    doc = service.identify(Upload("probe.pgm", orl_bytes(orl_dir, 2, 5)), top=3)
    client = TestClient(create_app(service, TokenChecker(TOKEN)), follow_redirects=False)
    yield client, service, doc["results"][0]["faces"][0]["search_id"]
    service.close()


def login(client: TestClient) -> str:
    page = client.get("/login")
    assert page.status_code == 200
    r = client.post("/login", data={"token": TOKEN, "csrf": csrf_of(page.text), "next": "/"})
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    return csrf_of(client.get("/").text)


def test_pages_need_a_login(site):
    client, _, sid = site
    client.cookies.clear()
    for url in ("/", f"/review/{sid}", "/identify", "/enrol"):
        r = client.get(url)
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert client.get(f"/api/searches/{sid}/face.png").status_code == 401


def test_login_checks_csrf_and_token(site):
    client, _, _ = site
    client.cookies.clear()
    page = client.get("/login")
    assert client.post("/login", data={"token": TOKEN, "csrf": "forged"}).status_code == 403
    assert client.post("/login", data={"token": TOKEN, "csrf": "é"}).status_code == 403  # had been a 500
    r = client.post("/login", data={"token": "wrong-token-wrong", "csrf": csrf_of(page.text)})
    assert r.status_code == 401 and "not valid" in r.text
    r = client.post("/login", data={"token": TOKEN, "csrf": csrf_of(page.text), "next": "//evil.example/x"})
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_visitors_who_never_log_in_write_nothing(site):
    """The login form's CSRF value lives in the visitor's own cookie: a flood of anonymous visits adds no session
    to the database, and a form posted without that cookie (or with another value) is refused."""
    client, service, _ = site

    def sessions() -> int:
        return service.sessions_store._exec("SELECT COUNT(*) FROM sessions").fetchone()[0]  # noqa: SLF001

    before = sessions()
    for _ in range(30):
        client.cookies.clear()
        assert client.get("/login").status_code == 200
    assert sessions() == before
    page = client.get("/login")
    value = csrf_of(page.text)
    assert client.cookies.get("lookalike_login") == value
    client.cookies.clear()
    assert client.post("/login", data={"token": TOKEN, "csrf": value}).status_code == 403  # no cookie: refused
    client.cookies.set("lookalike_login", "another-value")
    assert client.post("/login", data={"token": TOKEN, "csrf": value}).status_code == 403
    assert sessions() == before
    client.cookies.clear()
    login(client)  # the cookie and the form agree: logged in, one session
    assert sessions() == before + 1 and "lookalike_login" not in client.cookies


def test_review_page_and_verdict(site):
    client, service, sid = site
    client.cookies.clear()
    csrf = login(client)
    for bad in ("99999999999999999999", "9223372036854775808", "abc", "0"):  # a 404 page for a person, not a 500
        for url in (f"/review/{bad}", f"/review/{bad}/report.html"):
            r = client.get(url)
            assert r.status_code == 404 and r.headers["content-type"].startswith("text/html"), url
            assert "no such page or search" in r.text and "Searches</a>" in r.text  # the menu, logged in
    r = client.get("/../../etc/passwd")
    assert r.status_code == 404 and "root:" not in r.text and r.headers["content-type"].startswith("text/html")
    assert client.get("/api/no/such").headers["content-type"].startswith("application/json")  # the API: JSON
    r = client.get(f"/review/{sid}")
    assert r.status_code == 200
    html = r.text
    assert "investigative leads, not identifications" in html
    assert f"/api/searches/{sid}/face.png" in html and "/face.png" in html and "Show scores" in html
    assert re.search(r"base \d+ → 1", html) and html.count('class="verdict-form"') == 3
    face = service.get_search(sid)["result"]["results"][0]["faces"][0]
    assert f"{face['face_px']} px across" in html and face["resolution_note"] is None  # ORL: ~70 px, full resolution
    assert 'class="resolution-note"' not in html
    for h in ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options"):
        assert h.lower() in {k.lower() for k in r.headers}
    assert client.get(f"/api/searches/{sid}/face.png").status_code == 200  # pictures with the session cookie
    top = service.get_search(sid)["result"]["results"][0]["faces"][0]["candidates"][0]["subject"]

    n = len(service.get_search(sid)["reviews"])
    form = {"subject": top, "verdict": "match", "reviewer": "Examiner A", "note": "same ear shape"}
    assert client.post(f"/review/{sid}", data={**form, "csrf": "forged"}).status_code == 403
    assert client.post(f"/review/{sid}", data=form).status_code == 403
    assert len(service.get_search(sid)["reviews"]) == n
    r = client.post(f"/review/{sid}", data={**form, "csrf": csrf})
    assert r.status_code == 303
    reviews = service.get_search(sid)["reviews"]
    assert len(reviews) == n + 1 and reviews[-1]["verdict"] == "match" and reviews[-1]["reviewer"] == "Examiner A"
    page = client.get(f"/review/{sid}").text
    assert "Recorded:" in page and "same ear shape" in page
    assert "<td>base matcher</td>" in client.get("/").text  # the search list says what ranked each search
    r = client.post(f"/review/{sid}", data={**form, "subject": "nobody", "csrf": csrf})
    assert r.status_code == 422 and "not a candidate" in r.text
    # a refused verdict: the reason on its candidate's card, and what was typed kept there
    r = client.post(f"/review/{sid}", data={**form, "reviewer": " ", "note": "ears differ", "csrf": csrf})
    card = r.text[r.text.index(f'data-subject="{top}"'):]
    card = card[:card.index("</article>")]
    assert r.status_code == 422 and 'role="alert">Not recorded:' in card and "reviewer" in card
    assert "ears differ</textarea>" in card and 'value="match" required checked' in card
    assert len(service.get_search(sid)["reviews"]) == n + 1
    # a verdict posted after the session ended: not saved, and the login page says so
    client.cookies.clear()
    r = client.post(f"/review/{sid}", data={**form, "csrf": csrf})
    assert r.status_code == 303 and r.headers["location"] == f"/login?next=%2Freview%2F{sid}&unsaved=1"
    assert "was not saved" in client.get(r.headers["location"]).text
    assert len(service.get_search(sid)["reviews"]) == n + 1


def test_the_probe_photo_boxes_the_searched_face(site, orl_dir: Path):
    import io

    from PIL import Image

    client, service, _ = site
    client.cookies.clear()
    login(client)
    doc = service.identify(Upload("group.png", many_faces_png(orl_dir)), top=3)
    faces = doc["results"][0]["faces"]
    assert len(faces) == 3
    for f in faces:
        photo = np.asarray(Image.open(io.BytesIO(client.get(f"/api/searches/{f['search_id']}/photo.png").content)))
        yellow = np.argwhere((photo[..., 0] > 240) & (photo[..., 1] > 190) & (photo[..., 2] < 40))
        left, top, right, bottom = f["box"]  # the frame lies on this face's box (the PNG is not shrunk here)
        assert len(yellow) and abs(yellow[:, 1].min() - left) <= 3 and abs(yellow[:, 1].max() - right) <= 3
        assert abs(yellow[:, 0].min() - top) <= 3 and abs(yellow[:, 0].max() - bottom) <= 3
        assert f"face {f['index'] + 1} ·" in client.get(f"/review/{f['search_id']}").text


def test_review_page_notes_a_small_face(site, orl_dir: Path):
    """A probe face smaller than the gallery's faces are searched as (ORL shrunk to 23x28): the review page and the
    case report say how many pixels across it is and why that matters."""
    import io

    from PIL import Image

    client, service, _ = site
    buf = io.BytesIO()
    Image.open(orl_dir / "s2" / "5.pgm").resize((23, 28), Image.BICUBIC).save(buf, format="PNG")
    doc = service.identify(Upload("small.png", buf.getvalue()), top=3, precropped=True)
    face = doc["results"][0]["faces"][0]
    assert face["face_px"] < 48 and "searched as a full-resolution one" in face["resolution_note"]
    client.cookies.clear()
    login(client)
    page = client.get(f"/review/{face['search_id']}").text
    assert 'class="resolution-note"' in page and f"{face['face_px']} px face searched as" in page
    assert face["resolution_note"] in client.get(f"/review/{face['search_id']}/report.html").text


def test_tied_candidates_are_marked_on_the_review_page_and_in_the_case_report(orl_dir: Path, tmp_path: Path):
    """s1's photo enrolled again as a-twin (after s1; the same pixels as a PNG, since the service refuses the same
    file twice): a search of it lists a-twin first (ties go by name), and the review page and the case report mark
    both as tied, the lead's tie beside the decision."""
    Gallery.create(tmp_path / "g.sqlite", matcher=FAST_MATCHER).close()
    service = Service(str(tmp_path / "g.sqlite"), data_dir=tmp_path / "images", engines=1)
    try:
        for name, person in (("s1", 1), ("s2", 2), ("s3", 3)):
            service.add_images(name, [Upload("1.pgm", orl_bytes(orl_dir, person, 1))], create=True)
        service.add_images("a-twin", [Upload("1.png", png_copy(orl_dir, 1, 1))], create=True)
        face = service.identify(Upload("probe.pgm", orl_bytes(orl_dir, 1, 1)), top=3)["results"][0]["faces"][0]
        assert [(c["subject"], c["tied_with"]) for c in face["candidates"]][:2] == [("a-twin", [2]), ("s1", [1])]
        client = TestClient(create_app(service, TokenChecker(TOKEN)), follow_redirects=False)
        login(client)
        page = client.get(f"/review/{face['search_id']}").text
        report = client.get(f"/review/{face['search_id']}/report.html").text
    finally:
        service.close()
    lead = "#1 a-twin is tied with #2 s1: which of them is first is arbitrary."
    assert '<strong>Tied candidates</strong> (tied: the scores the list is ranked by are equal' in page
    assert f"<strong>Tied:</strong> {lead}" in page and page.count('<span class="badge tie">tied</span>') == 2
    for card, note in (("a-twin", "tied with #2 s1: the order between them is arbitrary"),
                       ("s1", "tied with #1 a-twin: the order between them is arbitrary")):
        html = page[page.index(f'data-subject="{card}"'):]
        assert f'<p class="tie">{note}</p>' in html[:html.index("</article>")]
    assert "<strong>Tied candidates</strong> (tied: the scores" in report and lead in report
    assert '<div class="tie">tied with #2 s1: the order between them is arbitrary</div>' in report
    assert '<div class="tie">tied with #1 a-twin: the order between them is arbitrary</div>' in report
    assert "at FPIR 0.01; #1 a-twin is tied with #2 s1" in report


def other_page(service: Service, search_id: int) -> str:
    """The review page of a search of ``service``, logged in."""
    client = TestClient(create_app(service, TokenChecker(TOKEN)), follow_redirects=False)
    login(client)
    return client.get(f"/review/{search_id}").text


def test_a_service_gives_small_faces_to_the_small_face_model(orl_dir: Path, tmp_path: Path):
    """``serve --model default``'s companion: a face at most 20 px across is searched by the shipped small-face model
    (20 px probes against a sharp gallery), a larger one by the service's model (here none); batches do not route."""
    import io

    from PIL import Image

    from lookalike.model import default_face_size_model

    db = str(tmp_path / "flip.sqlite")  # a new full-resolution gallery: the default (flip) matcher the model needs
    Gallery.create(db).close()
    with Gallery.open(db) as g:
        small_model = default_face_size_model("small", g.matcher_name, g.aligner, g.preprocess)
    other = Service(db, None, tmp_path / "images", engines=1, small_faces=small_model)
    try:
        for p in (1, 2, 3):
            other.add_images(f"s{p}", [Upload("1.pgm", orl_bytes(orl_dir, p, 1))], create=True)
        buf = io.BytesIO()
        Image.open(orl_dir / "s2" / "5.pgm").resize((18, 22), Image.BICUBIC).save(buf, format="PNG")
        small = Upload("small.png", buf.getvalue())
        doc = other.identify(small, top=3, precropped=True)
        face = doc["results"][0]["faces"][0]
        assert face["face_px"] <= 20 and face["probe_lowres"] == 20 and doc["small_face_model"]["max_face_px"] == 20
        page = other_page(other, face["search_id"])
        assert "A small face: searched as a 20 px probe and re-ranked by the small-face model" in page
        assert other.identify(Upload("big.pgm", orl_bytes(orl_dir, 2, 5)), top=3)["results"][0]["faces"][0][
            "probe_lowres"] is None
        batch = other.identify_many([small], "batch", top=3, precropped=True)
        assert batch["results"][0]["faces"][0]["probe_lowres"] is None
    finally:
        other.close()


def test_a_service_keeps_sharp_faces_sharp_on_a_low_resolution_gallery(orl_dir: Path, tmp_path: Path):
    """``serve --model default`` on a 20 px gallery: a face at least 48 px across is searched sharp by the shipped
    sharp-face model (sharp probes against 20 px gallery faces), and the review page says so."""
    from lookalike.model import default_face_size_model, load_model

    main20 = load_model("default", lowres=20)
    sharp = default_face_size_model("sharp", main20.matcher_name_, main20.aligner, "lowres20-chip22")
    service = Service(str(tmp_path / "g20.sqlite"), main20, tmp_path / "images", engines=1, sharp_faces=sharp)
    try:
        for p in (1, 2, 3):
            service.add_images(f"s{p}", [Upload("1.pgm", orl_bytes(orl_dir, p, 1))], create=True)
        doc = service.identify(Upload("probe.pgm", orl_bytes(orl_dir, 2, 5)), top=3)
        face = doc["results"][0]["faces"][0]
        assert face["face_px"] >= 48 and face["probe_lowres"] is None and doc["sharp_face_model"]["min_face_px"] == 48
        page = other_page(service, face["search_id"])
        assert "A sharp face: kept sharp (not degraded to the gallery's 20 px)" in page
    finally:
        service.close()


def test_a_service_with_every_scale_finds_a_small_face_beside_a_large_one(site, orl_dir: Path, tmp_path: Path):
    """``serve --every-scale``: both faces of a photo holding a large and a small face are searched and stored, and
    each search's probe face is cut at its own box."""
    import io

    from PIL import Image

    _, service, _ = site
    big = Image.open(orl_dir / "s2" / "5.pgm").convert("RGB")
    canvas = Image.new("RGB", (200, 120), (128, 128, 128))
    canvas.paste(big, (0, 4))
    canvas.paste(big.resize((18, 22), Image.BICUBIC), (150, 50))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    other = Service(service.db, None, tmp_path / "images", engines=1, every_scale=True)
    try:
        faces = other.identify(Upload("two.png", buf.getvalue()), top=3)["results"][0]["faces"]
        assert len(faces) == 2 and faces[0]["face_px"] > 48 > faces[1]["face_px"]
        client = TestClient(create_app(other, TokenChecker(TOKEN)), follow_redirects=False)
        login(client)
        pictures = [client.get(f"/api/searches/{f['search_id']}/face.png") for f in faces]
        assert all(r.status_code == 200 for r in pictures) and pictures[0].content != pictures[1].content
    finally:
        other.close()
    assert len(service.identify(Upload("two.png", buf.getvalue()), top=3)["results"][0]["faces"]) == 1


def test_the_case_report_is_one_self_contained_file(site, orl_dir: Path):
    """The review's case report: downloaded as one HTML file holding the faces inline (no link back to the service),
    the candidate list with scores and groups, the decision and every verdict; a candidate whose subject was removed
    since is marked, not an error; logged out: to the login page; an unknown search: 404."""
    client, service, sid = site
    client.cookies.clear()
    assert client.get(f"/review/{sid}/report.html").status_code == 303
    csrf = login(client)
    assert f'href="/review/{sid}/report.html"' in client.get(f"/review/{sid}").text
    faces = service.get_search(sid)["result"]["results"][0]["faces"][0]["candidates"]
    form = {"subject": faces[0]["subject"], "verdict": "non-match", "reviewer": "Examiner <b>C</b>",
            "note": "scar <script>alert(1)</script>", "csrf": csrf}
    assert client.post(f"/review/{sid}", data=form).status_code == 303
    r = client.get(f"/review/{sid}/report.html")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["content-disposition"] == f'attachment; filename="search-{sid}-report.html"'
    html = r.text
    assert "investigative leads, not identifications" in html and f"Search #{sid}" in html
    assert f", by lookalike {lookalike.__version__}" in html  # the version that searched, not only the one writing
    # the fixture's search was made without a token (the Python API); the page's verdict records the page's token
    assert "run with —" in html and "<td>LOOKALIKE_TOKEN</td>" in html
    assert html.count("data:image/png;base64,") == 2 + len(faces)  # probe face, probe photo, each candidate
    assert not re.search(r'(src|href)="/', html) and "<script>" not in html  # nothing fetched; notes escaped
    assert "Examiner &lt;b&gt;C&lt;/b&gt;" in html and "scar &lt;script&gt;" in html
    assert all(c["subject"] in html for c in faces) and f"{faces[0]['final_score']:.4f}" in html
    gone = Service(service.db, data_dir=service.files.root, engines=1)
    try:  # another process removes a candidate's subject: the report still comes, the face marked as gone
        gone.add_images("s9", [Upload("1.pgm", orl_bytes(orl_dir, 9, 1))], create=True)
        doc = gone.identify(Upload("probe.pgm", orl_bytes(orl_dir, 9, 2)), top=4)
        sid2 = doc["results"][0]["faces"][0]["search_id"]
        gone.delete_subject("s9")
    finally:
        gone.close()
    r = client.get(f"/review/{sid2}/report.html")
    assert r.status_code == 200 and "no longer in the gallery" in r.text
    assert client.get("/review/999999/report.html").status_code == 404
    client.cookies.clear()  # the same file through the API, for a client with a token
    api = client.get(f"/api/searches/{sid}/report.html", headers={"Authorization": f"Bearer {TOKEN}"})
    assert api.status_code == 200 and api.headers["content-disposition"] == r.headers["content-disposition"].replace(
        str(sid2), str(sid)) and api.text.count("data:image/png;base64,") == 2 + len(faces)
    assert client.get(f"/api/searches/{sid}/report.html").status_code == 401
    missing = client.get("/api/searches/999999/report.html", headers={"Authorization": f"Bearer {TOKEN}"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_search"


def test_the_review_page_and_the_case_report_show_no_server_path(site):
    """The case report names the gallery by its file's name (it had shown the server's path to the SQLite file), and
    neither it nor the review page shows a folder of the server."""
    client, service, sid = site
    client.cookies.clear()
    login(client)
    root = str(Path(service.db).parent)  # the folder of the gallery and of its images
    review, report = client.get(f"/review/{sid}"), client.get(f"/review/{sid}/report.html")
    assert review.status_code == report.status_code == 200
    assert root not in review.text and root not in report.text
    assert '<tr><th scope="row">Gallery</th><td>g.sqlite</td></tr>' in report.text


def test_a_page_address_with_a_trailing_slash_is_not_redirected(site):
    """/review/1/ and /identify/ are a 404 page: they had been a 307 to an absolute URL built from the request's
    Host header (http://evil.example/identify)."""
    client, _, sid = site
    login(client)
    for url in (f"/review/{sid}/", "/identify/", "/enrol/"):
        r = client.get(url, headers={"Host": "evil.example"})
        assert r.status_code == 404 and "location" not in r.headers, url
        assert r.headers["content-type"].startswith("text/html") and "no such page" in r.text, url


def test_a_login_outlives_a_restart_and_holds_across_processes(site, tmp_path: Path):
    """Page sessions live in the gallery's database (under a hash of the cookie): a restarted service, or another
    service process on the same gallery, knows the examiner; logging out on one ends the session on every one."""
    client, service, sid = site
    client.cookies.clear()
    csrf = login(client)
    cookie = client.cookies.get("lookalike_session")
    top = service.get_search(sid)["result"]["results"][0]["faces"][0]["candidates"][0]["subject"]
    form = {"subject": top, "verdict": "inconclusive", "reviewer": "Examiner R", "note": "", "csrf": csrf}
    assert client.post(f"/review/{sid}", data=form).status_code == 303  # the session remembers the reviewer
    con = sqlite3.connect(service.db)
    stored = [r[0] for r in con.execute("SELECT id_hash FROM sessions")]
    con.close()
    assert stored and cookie not in stored and hashlib.sha256(cookie.encode()).hexdigest() in stored
    other = Service(service.db, data_dir=tmp_path / "images", engines=1)  # a restart, or a second process
    try:
        client2 = TestClient(create_app(other, TokenChecker(TOKEN)), follow_redirects=False)
        client2.cookies.set("lookalike_session", cookie)
        page = client2.get(f"/review/{sid}")
        assert page.status_code == 200 and csrf_of(page.text) == csrf and 'value="Examiner R"' in page.text
        without_env = TestClient(create_app(other, TokenChecker(None)), follow_redirects=False)
        without_env.cookies.set("lookalike_session", cookie)  # logged in with LOOKALIKE_TOKEN, which it lacks
        assert without_env.get(f"/review/{sid}").status_code == 303
        changed = TestClient(create_app(other, TokenChecker("another-env-token-value")), follow_redirects=False)
        changed.cookies.set("lookalike_session", cookie)  # LOOKALIKE_TOKEN replaced (a leak): its sessions end
        assert changed.get(f"/review/{sid}").status_code == 303
        assert changed.get("/api/subjects", cookies={"lookalike_session": cookie}).status_code == 401
        assert client2.get(f"/review/{sid}").status_code == 200  # not logged out where the token is valid
        r = client2.post("/logout", data={"csrf": csrf})
        assert r.status_code == 303
    finally:
        other.close()
    r = client.get(f"/review/{sid}")  # logged out there: logged out here too
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_identify_and_enrol_pages(site, orl_dir: Path):
    client, service, _ = site
    client.cookies.clear()
    csrf = login(client)
    files = {"file": ("probe.pgm", orl_bytes(orl_dir, 3, 6), "image/x-portable-graymap")}
    assert client.post("/identify", files=files, data={"csrf": "forged"}).status_code == 403
    r = client.post("/identify", files=files, data={"csrf": csrf, "top": "3", "fpir": "0.01"})
    assert r.status_code == 303 and r.headers["location"].startswith("/review/")
    assert client.get(r.headers["location"]).status_code == 200
    r = client.post("/identify", files={"file": ("x.txt", b"hello", "text/plain")},
                    data={"csrf": csrf, "top": "7", "fpir": "0.001", "precropped": "true"})
    assert r.status_code == 415 and "not an image" in r.text
    assert 'name="top" value="7"' in r.text and '<option value="0.001" selected>' in r.text  # the settings kept
    assert 'value="true" checked' in r.text

    files = [("files", ("a.pgm", orl_bytes(orl_dir, 4, 1), "image/x-portable-graymap"))]
    r = client.post("/enrol", files=files, data={"csrf": csrf, "name": "New Person"})
    assert r.status_code == 303 and r.headers["location"] == "/enrol?subject=New%20Person"  # reloading posts nothing
    page = client.get(r.headers["location"]).text
    assert "Enrolled 1 photo(s) of New Person: a.pgm (image #" in page and "Photos of New Person (1)" in page
    assert [s["images"] for s in service.list_subjects() if s["name"] == "New Person"] == [1]
    r = client.post("/enrol", files=[("files", ("b.pgm", orl_bytes(orl_dir, 4, 2), "x"))],
                    data={"csrf": csrf, "name": "../etc"})
    assert r.status_code == 422 and "../etc" not in [s["name"] for s in service.list_subjects()]
    for path, field in (("/enrol", "files"), ("/identify", "file")):  # a browser's file input left empty
        r = client.post(path, files=[(field, ("", b"", "application/octet-stream"))],
                        data={"csrf": csrf, "name": "Nobody Yet"})
        assert r.status_code == 422 and "No photo was chosen" in r.text and "UploadFile" not in r.text, r.text
    r = client.post("/identify", data={"csrf": csrf, "note": "x" * (1024 * 1024 + 10)}, files={"file": ("a", b"")})
    assert r.status_code == 400 and "could not be read" in r.text and r.headers["content-type"].startswith("text/html")

    page = client.get("/enrol?prefix=New")  # the list narrowed by a prefix; the heading counts every subject
    assert page.status_code == 200 and f"Subjects ({service.count_subjects()})" in page.text
    assert ">New Person</a></td>" in page.text and ">s1</a></td>" not in page.text
    assert '<a href="/enrol?subject=s1">s1</a>' in client.get("/enrol").text
    assert client.get("/enrol?subject=nobody").status_code == 404


def test_the_enrol_page_lists_a_bounded_number_of_subjects(site, monkeypatch):
    """A gallery may hold millions of subjects: the page lists the first ENROL_PAGE_SUBJECTS by name."""
    from lookalike.service import pages

    client, service, _ = site
    client.cookies.clear()
    login(client)
    monkeypatch.setattr(pages, "ENROL_PAGE_SUBJECTS", 2)
    html = client.get("/enrol").text
    assert html.count("<tr><td>") == 2 and "The first 2 by name" in html
    assert f"Subjects ({service.count_subjects()})" in html and service.count_subjects() > 2


def test_the_search_list_pages_back_to_the_oldest_search(site, orl_dir: Path, monkeypatch):
    """The search list shows SEARCH_LIST_PAGE searches, newest first, and a full page links to the older ones with
    the API's ``before=`` cursor (it had shown the newest 200 with no way to older ones); an older page links back
    to the newest; a cursor that is not an id is the error page."""
    from lookalike.service import pages

    client, service, _ = site
    service.identify(Upload("probe.pgm", orl_bytes(orl_dir, 3, 6)), top=2)
    everyone = [s["id"] for s in service.list_searches(1000)]
    assert len(everyone) >= 2
    client.cookies.clear()
    login(client)
    monkeypatch.setattr(pages, "SEARCH_LIST_PAGE", 1)
    seen, url = [], "/"
    while url:
        html = client.get(url).text
        seen += [int(i) for i in re.findall(r'<td><a href="/review/(\d+)"[^>]*>#', html)]
        assert ('<a href="/">Newest searches</a>' in html) == (url != "/")
        older = re.search(r'<a href="(/\?before=\d+)" rel="next">Older searches</a>', html)
        url = older.group(1) if older else None
    assert seen == everyone
    assert f"No searches older than #{everyone[-1]}" in client.get(f"/?before={everyone[-1]}").text
    for bad in ("abc", "1.0", "0"):
        assert client.get(f"/?before={bad}").status_code == 404, bad


def test_service_with_a_trained_model(orl_dir: Path, tmp_path: Path):
    """A model trained on ORL (dlib matcher) re-ranks the service's candidate lists."""
    from lookalike.train import train_model

    model, _ = train_model(str(orl_dir), matcher=FAST_MATCHER, cache=str(tmp_path / "cache.sqlite"), depth=20,
                           max_people=12, progress=False)
    path = tmp_path / "m.lkm"
    model.save(path)
    from lookalike.model import LookalikeModel

    Gallery.create(tmp_path / "g.sqlite", matcher=FAST_MATCHER).close()
    service = Service(str(tmp_path / "g.sqlite"), LookalikeModel.load(path), tmp_path / "images", engines=1)
    try:
        for p in range(13, 19):
            service.add_images(f"s{p}", [Upload(f"{i}.pgm", orl_bytes(orl_dir, p, i)) for i in (1, 2)], create=True)
        doc = service.identify(Upload("probe.pgm", orl_bytes(orl_dir, 15, 8)), top=5)
        assert [s["ranked_by"] for s in service.list_searches()] == ["lookalike model"]
    finally:
        service.close()
    face = doc["results"][0]["faces"][0]
    assert doc["model"]["matcher"] == model.matcher_name_ and len(face["candidates"]) == 5
    assert face["candidates"][0]["subject"] == "s15"
    assert sorted(c["base_rank"] for c in face["candidates"]) == [1, 2, 3, 4, 5]
    assert face["decision"]["calibrated_on"] in ("model", "gallery-sample")
    assert face["decision"]["threshold"] >= model.threshold(0.01) - 1e-9  # never more lenient than the model's


# --- what a keyboard or screen-reader user relies on (structure of the rendered HTML; the browser test drives it) ---
class Node:
    """An element of a parsed page: tag, attributes, children and its text."""

    def __init__(self, tag: str, attrs: dict, parent: Node | None) -> None:
        self.tag, self.attrs, self.parent, self.children, self.texts = tag, attrs, parent, [], []

    def iter(self):
        yield self
        for c in self.children:
            yield from c.iter()

    def find_all(self, *tags: str) -> list[Node]:
        return [n for n in self.iter() if n.tag in tags]

    def text(self) -> str:
        return " ".join(" ".join(self.texts + [c.text() for c in self.children]).split())

    def ancestors(self):
        node = self.parent
        while node is not None:
            yield node
            node = node.parent


def parse_html(html: str) -> Node:
    """A page as a tree of :class:`Node` (the standard library's parser; void elements have no children)."""
    from html.parser import HTMLParser

    void = {"meta", "link", "input", "img", "br", "hr", "source", "col", "area", "base", "wbr", "option"}
    root = Node("#document", {}, None)

    class Builder(HTMLParser):
        node = root

        def handle_starttag(self, tag, attrs):
            child = Node(tag, {k: v or "" for k, v in attrs}, self.node)
            self.node.children.append(child)
            if tag not in void:
                self.node = child

        def handle_endtag(self, tag):
            for n in [self.node, *self.node.ancestors()]:
                if n.tag == tag:
                    self.node = n.parent
                    return

        def handle_data(self, data):
            self.node.texts.append(data)

    Builder().feed(html)
    return root


def accessibility_problems(html: str) -> list[str]:
    """What a keyboard or screen-reader user would miss on a page: ``lang``, a title, one h1 and no skipped heading
    level, a ``main`` landmark and a skip link to it, every form control labelled, radios in a fieldset with a
    legend, data tables named with scoped header cells, images with alt text, ``aria-labelledby`` pointing at an
    element, an ``aria-label`` that contains the visible text, flash messages announced."""
    doc = parse_html(html)
    problems = []
    ids = {n.attrs["id"] for n in doc.iter() if "id" in n.attrs}
    if not any(n.attrs.get("lang") for n in doc.find_all("html")):
        problems.append("no lang on <html>")
    if not [t for t in doc.find_all("title") if t.text()]:
        problems.append("no <title>")
    levels = [int(h.tag[1]) for h in doc.iter() if re.fullmatch(r"h[1-6]", h.tag)]
    if levels.count(1) != 1 or levels[0] != 1:
        problems.append(f"headings {levels}: not one h1 first")
    problems += [f"heading level skipped: h{a} then h{b}" for a, b in zip(levels, levels[1:], strict=False)
                 if b > a + 1]
    main = doc.find_all("main")
    if len(main) != 1:
        problems.append(f"{len(main)} <main> landmarks")
    links = doc.find_all("a")
    if doc.find_all("header") and not (links and links[0].attrs.get("href") == "#main" and "main" in ids):
        problems.append("no skip link to #main before the menu")
    for label_id in (i for n in doc.iter() for i in n.attrs.get("aria-labelledby", "").split()):
        if label_id not in ids:
            problems.append(f"aria-labelledby={label_id!r} names no element")
    labelled_for = {n.attrs.get("for") for n in doc.find_all("label")}
    for n in doc.find_all("input", "select", "textarea"):
        if n.attrs.get("type") == "hidden":
            continue
        if not (n.attrs.get("aria-label") or n.attrs.get("aria-labelledby") or n.attrs.get("id") in labelled_for
                or any(a.tag == "label" for a in n.ancestors())):
            problems.append(f"unlabelled <{n.tag} name={n.attrs.get('name')!r}>")
        if n.attrs.get("type") == "radio" and not any(
                a.tag == "fieldset" and a.find_all("legend") for a in n.ancestors()):
            problems.append(f"radio {n.attrs.get('name')!r} outside a fieldset with a legend")
    for n in doc.find_all("button", "a"):
        shown, name = n.text().lower(), n.attrs.get("aria-label", "").lower()
        if name and shown and shown not in name:
            problems.append(f"aria-label {name!r} lacks the visible text {shown!r}")
    for t in doc.find_all("table"):
        if not (t.find_all("caption") or t.attrs.get("aria-label") or t.attrs.get("aria-labelledby")):
            problems.append("a table without a caption or name")
        problems += [f"<th>{th.text()}</th> without scope" for th in t.find_all("th") if "scope" not in th.attrs]
    problems += [f"<img src={i.attrs.get('src', '')[:40]!r}> without alt" for i in doc.find_all("img")
                 if not i.attrs.get("alt")]
    problems += [f"flash {n.text()!r} not announced" for n in doc.iter()
                 if "flash" in n.attrs.get("class", "").split() and n.attrs.get("role") != "status"]
    return problems


def test_every_page_is_usable_with_a_keyboard_and_a_screen_reader(site):
    """Each page (login, search list, review with a verdict's confirmation, identify, enrol with a subject's photos,
    an error, the case report) passes :func:`accessibility_problems`; the review page's title names the search and
    its photo, its candidates are headed under "Candidates", each card is a focus target named by its subject."""
    client, service, sid = site
    client.cookies.clear()
    pages = {"login": client.get("/login").text}
    csrf = login(client)
    top = service.get_search(sid)["result"]["results"][0]["faces"][0]["candidates"][0]["subject"]
    form = {"subject": top, "verdict": "inconclusive", "reviewer": "Examiner K", "note": "", "csrf": csrf}
    assert client.post(f"/review/{sid}", data=form).status_code == 303
    for url in (f"/review/{sid}", "/", "/identify", "/enrol?subject=s1", "/review/999999"):  # the confirmation first
        pages[url] = client.get(url).text
    pages["report"] = client.get(f"/review/{sid}/report.html").text
    assert {name: accessibility_problems(html) for name, html in pages.items()} == {name: [] for name in pages}
    review = parse_html(pages[f"/review/{sid}"])
    assert any("Recorded:" in n.text() and n.attrs.get("role") == "status" for n in review.iter())
    assert f"search #{sid}: probe.pgm" in review.find_all("title")[0].text()
    headings = [(h.tag, h.text()) for h in review.iter() if re.fullmatch(r"h[1-6]", h.tag)]
    assert ("h2", "Candidates") in headings and headings[-1] == ("h2", "Audit trail (append-only)")
    cards = [n for n in review.find_all("article") if "cand" in n.attrs.get("class", "")]
    assert len(cards) == 3
    for card in cards:
        name = [h for h in card.find_all("h3") if h.attrs.get("id") == card.attrs["aria-labelledby"]]
        assert card.attrs["tabindex"] == "-1" and name and name[0].text() == card.attrs["data-subject"]
    nav = parse_html(pages["/"]).find_all("nav")[0]
    assert [a.text() for a in nav.find_all("a") if a.attrs.get("aria-current") == "page"] == ["Searches"]


def contrast(fg: str, bg: str) -> float:
    """WCAG contrast ratio of two ``#rgb``/``#rrggbb`` colours."""
    def luminance(colour: str) -> float:
        h = colour.lstrip("#")
        h = "".join(c * 2 for c in h) if len(h) == 3 else h
        rgb = [int(h[i:i + 2], 16) / 255 for i in (0, 2, 4)]
        r, g, b = (v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4 for v in rgb)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    hi, lo = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_text_colours_meet_wcag_aa_contrast():
    """Every text colour of the pages' style sheet and the case report's on the backgrounds it is shown on is at
    least 4.5:1 (WCAG AA, normal text): a rule's own colour on its own background (a badge: white on its background);
    other text colours on every light background the sheet uses; the dark menu bar's on the bar."""
    service_dir = Path(lookalike.__file__).parent / "service"
    sheets = [(service_dir / "static" / "style.css").read_text(),
              re.search(r"<style>(.*?)</style>", (service_dir / "templates" / "report.html").read_text(), re.S)[1]]
    low = []
    for css in sheets:
        declared = r"(?<![\w-])(color|background(?:-color)?)\s*:\s*(#[0-9a-fA-F]{3,6})\b"  # not border-left-color
        rules = [(sel.strip(), dict(re.findall(declared, body)))
                 for sel, body in re.findall(r"([^{}]+)\{([^{}]*)\}", re.sub(r"/\*.*?\*/", "", css, flags=re.S))]
        light = {c for _, d in rules for k, c in d.items() if k != "color" and contrast(c, "#000") > 10} | {"#fff"}
        for sel, d in rules:
            bg = d.get("background", d.get("background-color"))
            if "color" in d and bg:
                pairs = [(d["color"], bg)]
            elif bg and ".badge" in sel:
                pairs = [("#fff", bg)]
            elif "color" in d:
                pairs = [(d["color"], "#20252b")] if sel.startswith("header.top") else [(d["color"], b) for b in light]
            else:
                pairs = []
            low += [f"{sel}: {fg} on {b} {contrast(fg, b):.2f}" for fg, b in pairs if contrast(fg, b) < 4.5]
    assert low == []


# --- the review queue ------------------------------------------------------------------------------------------
def queue_links(html: str) -> dict[str, str]:
    """The review page's queue navigation: its landmark's links by their text (and its plain text under "text")."""
    navs = [n for n in parse_html(html).find_all("nav") if n.attrs.get("aria-label") == "Searches to review"]
    assert len(navs) == 1
    return {**{a.text(): a.attrs["href"] for a in navs[0].find_all("a")}, "text": navs[0].text()}


def test_the_review_queue_on_the_pages(orl_dir: Path, tmp_path: Path, db: str, monkeypatch):
    """The search list filters by "Awaiting review" / "With a verdict" and "Ambiguous only" and keeps the filters in
    its pager's links; each review page has Newer, Older (in the list's order) and "Next awaiting review" (the nearest
    older search without a verdict, or "none left") in a labelled nav landmark; after a verdict that link moves on."""
    from lookalike.service import pages

    Gallery.create(db, matcher=FAST_MATCHER).close()
    service = Service(db, data_dir=tmp_path / "images", engines=1)
    try:
        for p in (1, 2, 3):
            service.add_images(f"s{p}", [Upload("1.pgm", orl_bytes(orl_dir, p, 1))], create=True)
        a, b, c, d = (service.identify(Upload(f"{p}.pgm", orl_bytes(orl_dir, p, 6)), top=2)["results"][0]["faces"][0]
                      ["search_id"] for p in (1, 2, 3, 1))
        first = service.store.get_search(a, with_probe=True)  # search a stored again, ambiguous: e
        result = {**first.result, "results": [{**first.result["results"][0], "faces": [
            {**first.result["results"][0]["faces"][0], "ambiguous": True}]}]}
        e = service.store.add_search(first.probe, first.probe_sha1, result)
        client = TestClient(create_app(service, TokenChecker(TOKEN)), follow_redirects=False)
        csrf = login(client)

        def verdict(sid: int) -> None:
            top = service.get_search(sid)["result"]["results"][0]["faces"][0]["candidates"][0]["subject"]
            r = client.post(f"/review/{sid}", data={"subject": top, "verdict": "non-match", "reviewer": "Examiner Q",
                                                    "csrf": csrf})
            assert r.status_code == 303 and r.headers["location"] == f"/review/{sid}"

        r = client.get("/?reviewed=true")
        assert "No searches with a verdict. " in r.text and '<a href="/">All searches</a>' in r.text
        verdict(c)
        links = queue_links(client.get(f"/review/{b}").text)
        assert links[f"Older: #{a}"] == f"/review/{a}" and links[f"Newer: #{c}"] == f"/review/{c}"
        assert links[f"Next awaiting review (older): #{a}"] == f"/review/{a}"
        after_d = queue_links(client.get(f"/review/{d}").text)
        assert after_d[f"Next awaiting review (older): #{b}"] == f"/review/{b}"  # not c
        oldest = queue_links(client.get(f"/review/{a}").text)
        assert "Older: none" in oldest["text"] and oldest[f"Newer: #{b}"] == f"/review/{b}"
        assert "Next awaiting review: none left" in oldest["text"] and "all searches awaiting review" in oldest
        assert oldest["all searches awaiting review"] == "/?reviewed=false"
        newest = queue_links(client.get(f"/review/{e}").text)
        assert "Newer: none" in newest["text"] and newest[f"Next awaiting review (older): #{d}"] == f"/review/{d}"
        verdict(b)  # after a verdict: the confirmation, and the link on to the next search awaiting review
        page = client.get(f"/review/{b}").text
        assert "Recorded:" in page and queue_links(page)[f"Next awaiting review (older): #{a}"] == f"/review/{a}"
        assert accessibility_problems(page) == []

        def listed(url: str) -> list[int]:
            r = client.get(url)
            assert r.status_code == 200, url
            return [int(i) for i in re.findall(r'<td><a href="/review/(\d+)"[^>]*>#', r.text)]

        assert listed("/") == listed("/?reviewed=") == [e, d, c, b, a]
        assert listed("/?reviewed=false") == [e, d, a] and listed("/?reviewed=true") == [c, b]
        ambiguous = [s["id"] for s in service.list_searches() if s["ambiguous"]]  # e, and any ORL's own
        assert e in ambiguous and listed("/?ambiguous=true") == ambiguous
        assert listed("/?reviewed=false&ambiguous=true") == [i for i in ambiguous if i in (e, d, a)]
        assert f"No searches with a verdict older than #{b}." in client.get(f"/?reviewed=true&before={b}").text
        html = client.get("/?reviewed=false&ambiguous=true").text
        assert 'value="false" checked> Awaiting review' in html and 'value="true" checked> Ambiguous only' in html
        assert accessibility_problems(html) == []
        monkeypatch.setattr(pages, "SEARCH_LIST_PAGE", 1)  # the pager keeps the filter, both ways
        seen, url = [], "/?reviewed=false"
        while url:
            html = client.get(url).text
            seen += listed(url)
            older = re.search(r'<a href="([^"]+)" rel="next">Older searches awaiting review</a>', html)
            url = older.group(1).replace("&amp;", "&") if older else None
            assert url is None or "reviewed=false" in url
            if seen[-1] != e:
                assert '<a href="/?reviewed=false">Newest searches awaiting review</a>' in html
        assert seen == [e, d, a]
        assert "No searches awaiting review older than" in client.get(f"/?reviewed=false&before={a}").text
        for bad in ("maybe", "2"):
            assert client.get(f"/?reviewed={bad}").status_code == 404
    finally:
        service.close()
