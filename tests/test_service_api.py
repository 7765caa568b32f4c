"""The service's JSON API on real parts (dlib matcher, ORL faces) against SQLite and PostgreSQL: the round trip,
tokens and schema versions, and every kind of bad request (a 4xx with a JSON error, nothing written)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import FAST_MATCHER
from service_support import (
    AUTH,
    TOKEN,
    blank_png,
    bomb_png,
    many_faces_png,
    new_pg_schema,
    no_face_png,
    orl_bytes,
    png_copy,
    state,
)

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from lookalike.gallery import Gallery, StoreError, open_store  # noqa: E402
from lookalike.gallery.store import SCHEMA_VERSION  # noqa: E402
from lookalike.service.app import create_app  # noqa: E402
from lookalike.service.auth import Sessions, TokenChecker, hash_token  # noqa: E402
from lookalike.service.core import Service, ServiceError, create_token_in  # noqa: E402

ENROLLED = (1, 2, 3, 4)  # ORL people enrolled (images 1 and 2 each) in the module's galleries


def make_served(db: str, root: Path, orl_dir: Path, max_upload_mb: float = 1.0) -> SimpleNamespace:
    Gallery.create(db, matcher=FAST_MATCHER).close()
    service = Service(db, data_dir=root / "images", engines=1)
    for p in ENROLLED:
        service.create_subject(f"s{p}")
        from lookalike.service.core import Upload

        service.add_images(f"s{p}", [Upload(f"{i}.pgm", orl_bytes(orl_dir, p, i)) for i in (1, 2)])
    client = TestClient(create_app(service, TokenChecker(TOKEN), max_upload_mb))
    return SimpleNamespace(db=db, data_dir=root / "images", service=service, client=client)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(request, orl_dir: Path, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"svc-{request.param}")
    drop = None
    if request.param == "sqlite":
        db = str(root / "g.sqlite")
    else:
        from service_support import pg_base

        pg_base()
        db, drop = new_pg_schema()
    s = make_served(db, root, orl_dir)
    yield s
    s.client.close()
    s.service.close()
    if drop:
        drop()


def upload(data: bytes, name: str = "probe.pgm", field: str = "file") -> list:
    return [(field, (name, data, "application/octet-stream"))]


# --- the round trip ------------------------------------------------------------------------------------------
def test_enrol_identify_review_round_trip(served, orl_dir: Path):
    c = served.client
    r = c.post("/api/subjects", json={"name": "José O'Neill-Smith (s5)"}, headers=AUTH)
    assert r.status_code == 201, r.text
    name = r.json()["name"]
    r = c.post(f"/api/subjects/{name}/images", files=upload(orl_bytes(orl_dir, 5, 1), "a.pgm", "files")
               + upload(orl_bytes(orl_dir, 5, 2), "b.pgm", "files"), headers=AUTH)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["added"] == 2 and all(i["status"] == "ok" and i["image_id"] for i in body["images"])
    image_ids = [i["image_id"] for i in body["images"]]
    assert {s["name"] for s in c.get("/api/subjects", headers=AUTH).json()} >= {name, "s1", "s4"}
    everyone = [s["name"] for s in c.get("/api/subjects", headers=AUTH).json()]
    pages, after = [], None
    while page := c.get("/api/subjects", params={"limit": 2, **({"after": after} if after else {})},
                        headers=AUTH).json():
        pages.append([s["name"] for s in page])
        after = pages[-1][-1]
    assert [n for p in pages for n in p] == everyone and max(map(len, pages)) == 2
    linked, url = [], "/api/subjects?limit=2"  # the same pages, following each full page's Link header
    while url:
        r = c.get(url, headers=AUTH)
        linked.append([s["name"] for s in r.json()])
        url = r.links.get("next", {}).get("url")
        assert url is None or url.startswith("/api/subjects?")  # relative: no Host header a client sent
    assert [n for p in linked for n in p] == everyone and len(linked[-1]) < 2
    spoofed = c.get("/api/subjects?limit=2", headers={**AUTH, "Host": "evil.example"}).headers["link"]
    assert "evil.example" not in spoofed
    assert "link" not in c.get("/api/subjects", headers=AUTH).headers  # fewer subjects than a default page
    assert [s["name"] for s in c.get("/api/subjects", params={"prefix": "Jos"}, headers=AUTH).json()] == [name]
    for bad in ({"limit": 0}, {"limit": "x"}, {"prefix": "x" * 101}):
        assert c.get("/api/subjects", params=bad, headers=AUTH).status_code == 422
    got = c.get(f"/api/subjects/{name}", headers=AUTH).json()
    assert [i["id"] for i in got["images"]] == image_ids and got["images"][0]["detection"] == "detected"
    assert got["images_unusable"] == got["images_skipped"] == 0  # the figure's name, and its earlier one

    r = c.post("/api/identify", files=upload(orl_bytes(orl_dir, 5, 7)), data={"top": "3"}, headers=AUTH)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["schema_version"] == 1 and doc["top"] == 3 and doc["model"] is None and doc["lookalike_version"]
    (face,) = doc["results"][0]["faces"]
    assert face["candidates"][0]["subject"] == name and len(face["candidates"]) == 3
    assert {"rank", "subject", "image_id", "base_score", "base_rank", "final_score", "lookalike_group"} <= \
        set(face["candidates"][0])
    sid = face["search_id"]

    search = c.get(f"/api/searches/{sid}", headers=AUTH).json()
    assert search["result"]["results"][0]["faces"][0]["candidates"] == face["candidates"] and search["reviews"] == []
    assert sid in [s["id"] for s in c.get("/api/searches", headers=AUTH).json()]
    for url in (f"/api/searches/{sid}/face.png", f"/api/searches/{sid}/photo.png",
                f"/api/images/{image_ids[0]}/face.png", f"/api/images/{image_ids[0]}/photo.png"):
        r = c.get(url, headers=AUTH)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content[:4] == b"\x89PNG"
    r = c.get(f"/api/images/{image_ids[0]}/file", headers=AUTH)
    assert r.content == orl_bytes(orl_dir, 5, 1)
    assert c.get(f"/api/searches/{sid}/probe", headers=AUTH).content == orl_bytes(orl_dir, 5, 7)

    for verdict in ("inconclusive", "match"):
        r = c.post(f"/api/searches/{sid}/reviews", json={"subject": name, "verdict": verdict, "reviewer": "ann",
                                                         "note": "ears; scar"}, headers=AUTH)
        assert r.status_code == 201, r.text
    reviews = c.get(f"/api/searches/{sid}", headers=AUTH).json()["reviews"]
    assert [(x["verdict"], x["reviewer"]) for x in reviews] == [("inconclusive", "ann"), ("match", "ann")]
    # provenance: which token ran the search and recorded each verdict (the reviewer name is only typed)
    assert c.get(f"/api/searches/{sid}", headers=AUTH).json()["recorded_by"].startswith("env:")
    assert all(x["recorded_by"].startswith("env:") for x in reviews)
    stored = create_token_in(served.db, "examiner B")
    (token_id,) = [t.id for t in served.service.store.list_tokens() if t.label == "examiner B"]
    r = c.post(f"/api/searches/{sid}/reviews", json={"subject": name, "verdict": "non-match", "reviewer": "ann"},
               headers={"Authorization": f"Bearer {stored}"})  # typed as "ann", recorded with B's token
    assert r.status_code == 201 and r.json()["recorded_by"] == str(token_id)

    assert c.delete(f"/api/images/{image_ids[0]}", headers=AUTH).json()["removed"] is True
    assert c.delete(f"/api/subjects/{name}", headers=AUTH).json()["removed_images"] == 1
    doc = c.post("/api/identify", files=upload(orl_bytes(orl_dir, 5, 7)), headers=AUTH).json()
    assert name not in [x["subject"] for x in doc["results"][0]["faces"][0]["candidates"]]


def test_tied_candidates_are_marked_in_the_apis_document(orl_dir: Path, tmp_path: Path):
    """The same photo under two names (s1, then a-twin as a PNG of the same pixels): /api/identify and the stored
    search list a-twin first, each with the rank it ties with; the others tie with none."""
    served = make_served(str(tmp_path / "g.sqlite"), tmp_path, orl_dir)
    try:
        c = served.client
        assert c.post("/api/subjects", json={"name": "a-twin"}, headers=AUTH).status_code == 201
        r = c.post("/api/subjects/a-twin/images", files=upload(png_copy(orl_dir, 1, 1), "1.png", "files"),
                   headers=AUTH)
        assert r.status_code == 201, r.text
        r = c.post("/api/identify", files=upload(orl_bytes(orl_dir, 1, 1)), data={"top": "3"}, headers=AUTH)
        assert r.status_code == 200, r.text
        face = r.json()["results"][0]["faces"][0]
        assert [(x["subject"], x["tied_with"]) for x in face["candidates"]][:2] == [("a-twin", [2]), ("s1", [1])]
        assert face["candidates"][2]["tied_with"] == [] and face["decision"]["subject"] == "a-twin"
        stored = c.get(f"/api/searches/{face['search_id']}", headers=AUTH).json()
        assert stored["result"]["results"][0]["faces"][0]["candidates"] == face["candidates"]
    finally:
        served.client.close()
        served.service.close()


def test_many_faces_are_each_searched(served, orl_dir: Path):
    r = served.client.post("/api/identify", files=upload(many_faces_png(orl_dir), "group.png"), headers=AUTH)
    assert r.status_code == 200, r.text
    faces = r.json()["results"][0]["faces"]
    assert len(faces) == 3 and len({f["search_id"] for f in faces}) == 3
    assert sorted(f["candidates"][0]["subject"] for f in faces) == ["s1", "s2", "s3"]


def test_a_phone_photo_in_heic_is_searched_and_shown(served, orl_dir: Path):
    import io

    import pillow_heif
    from PIL import Image

    buf = io.BytesIO()
    pillow_heif.from_pillow(Image.open(orl_dir / "s3" / "6.pgm").convert("RGB")).save(buf, quality=90)
    r = served.client.post("/api/identify", files=upload(buf.getvalue(), "IMG_0001.HEIC"), headers=AUTH)
    assert r.status_code == 200, r.text
    (face,) = r.json()["results"][0]["faces"]
    assert face["candidates"][0]["subject"] == "s3"
    probe = served.client.get(f"/api/searches/{face['search_id']}/probe", headers=AUTH)
    assert probe.headers["content-type"] == "image/heic" and probe.content == buf.getvalue()
    shown = served.client.get(f"/api/searches/{face['search_id']}/photo.png", headers=AUTH)
    assert shown.status_code == 200 and Image.open(io.BytesIO(shown.content)).size == (92, 112)


def test_openapi_and_health(served):
    doc = served.client.get("/openapi.json").json()
    for path in ("/api/subjects", "/api/subjects/{name}/images", "/api/identify", "/api/searches/{search_id}/reviews",
                 "/api/images/{image_id}/face.png"):
        assert path in doc["paths"]
    assert served.client.get("/api/health").json()["status"] == "ok"


# --- bad requests: 4xx, a JSON error, nothing written -------------------------------------------------------
def test_several_photos_searched_together(served, orl_dir: Path):
    """``/api/identify/many``: ``batch`` searches every face of every photo (without a model, one by one, and says
    so), stores each as a search and reports an unusable photo in place; ``same-person`` searches the photos' faces
    as one template (a photo of several faces left out), undecided and not stored."""
    c = served.client
    before = len(c.get("/api/searches", headers=AUTH).json())
    files = (upload(orl_bytes(orl_dir, 1, 5), "a.pgm", "files") + upload(orl_bytes(orl_dir, 2, 5), "b.pgm", "files")
             + upload(b"%PDF-1.4 hello", "c.pdf", "files"))
    r = c.post("/api/identify/many", files=files, data={"mode": "batch", "top": "3"}, headers=AUTH)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["batch"]["reranked_together"] is False and "no lookalike model" in doc["batch"]["note"]
    a, b, pdf = doc["results"]
    assert [a["photo"], b["photo"], pdf["status"], pdf["faces"]] == ["a.pgm", "b.pgm", "not_an_image", []]
    assert [x["faces"][0]["candidates"][0]["subject"] for x in (a, b)] == ["s1", "s2"]
    ids = [x["faces"][0]["search_id"] for x in (a, b)]
    assert len(c.get("/api/searches", headers=AUTH).json()) == before + 2
    assert c.get(f"/api/searches/{ids[1]}/probe", headers=AUTH).content == orl_bytes(orl_dir, 2, 5)
    files = (upload(orl_bytes(orl_dir, 3, 5), "x.pgm", "files") + upload(orl_bytes(orl_dir, 3, 6), "y.pgm", "files")
             + upload(many_faces_png(orl_dir), "group.png", "files"))
    r = c.post("/api/identify/many", files=files, data={"mode": "same-person"}, headers=AUTH)
    assert r.status_code == 200, r.text
    *photos, template = r.json()["results"]
    assert [p.get("in_template", False) for p in photos] == [True, True, False] and photos[2]["status"] == "many_faces"
    (face,) = template["faces"]
    assert face["detection"] == "template" and face["template_of"] == ["x.pgm", "y.pgm"]
    assert face["candidates"][0]["subject"] == "s3" and face["decision"]["enrolled"] is None
    assert "search_id" not in face and len(c.get("/api/searches", headers=AUTH).json()) == before + 2


def _cases(face: bytes, enrolled_1: bytes, enrolled_2: bytes, many: bytes) -> dict:
    """``face``: a new image of an enrolled person; ``enrolled_*``: images of s1 already enrolled."""
    big = b"\xff\xd8\xff" + b"\0" * (1536 * 1024)  # 1.5 MB > the 1 MB limit of these apps
    wrong = {"Authorization": "Bearer not-the-token-at-all"}

    def chunks():  # a well-formed multipart body, sent in pieces without a Content-Length
        body = (b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
                b"Content-Type: image/jpeg\r\n\r\n" + big + b"\r\n--x--\r\n")
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]

    return {
        # (method, url, kwargs, status, error code)
        "create/missing token": ("post", "/api/subjects", {"json": {"name": "x"}}, 401, "missing_token"),
        "create/wrong token": ("post", "/api/subjects", {"json": {"name": "x"}, "headers": wrong}, 401, "bad_token"),
        "create/basic auth": ("post", "/api/subjects", {"json": {"name": "x"}, "headers": {
            "Authorization": "Basic dXNlcjpwdw=="}}, 401, "missing_token"),
        "enrol/missing token": ("post", "/api/subjects/s1/images", {"files": upload(face, field="files")}, 401,
                                "missing_token"),
        "enrol/wrong token": ("post", "/api/subjects/s1/images", {"files": upload(face, field="files"),
                                                                  "headers": wrong}, 401, "bad_token"),
        "delete subject/missing token": ("delete", "/api/subjects/s1", {}, 401, "missing_token"),
        "delete image/wrong token": ("delete", "/api/images/1", {"headers": wrong}, 401, "bad_token"),
        "identify/missing token": ("post", "/api/identify", {"files": upload(face)}, 401, "missing_token"),
        "identify/wrong token": ("post", "/api/identify", {"files": upload(face), "headers": wrong}, 401,
                                 "bad_token"),
        "review/missing token": ("post", "/api/searches/1/reviews", {"json": {}}, 401, "missing_token"),
        "searches/missing token": ("get", "/api/searches", {}, 401, "missing_token"),
        "image/missing token": ("get", "/api/images/1/face.png", {}, 401, "missing_token"),
        "identify/oversize": ("post", "/api/identify", {"files": upload(big)}, 413, "too_large"),
        "identify/oversize streamed": ("post", "/api/identify", {"content": chunks(), "headers": {
            "content-type": "multipart/form-data; boundary=x"}}, 413, "too_large"),
        "enrol/oversize": ("post", "/api/subjects/s1/images", {"files": upload(big, field="files")}, 413,
                           "too_large"),
        "identify/non-image": ("post", "/api/identify", {"files": upload(b"%PDF-1.4 hello", "a.pdf")}, 415,
                               "not_an_image"),
        "enrol/non-image": ("post", "/api/subjects/s1/images", {"files": upload(b"<script>", "x.jpg", "files")}, 415,
                            "not_an_image"),
        "identify/zero bytes": ("post", "/api/identify", {"files": upload(b"")}, 400, "empty"),
        "enrol/zero bytes": ("post", "/api/subjects/s1/images", {"files": upload(b"", field="files")}, 400, "empty"),
        "identify/fake png": ("post", "/api/identify", {"files": upload(b"\x89PNG\r\n\x1a\n" + b"junk" * 50)}, 422,
                              "unreadable"),
        "identify/decompression bomb": ("post", "/api/identify", {"files": upload(bomb_png(), "b.png")}, 413,
                                        "too_large"),
        "identify/over the service's pixel limit": ("post", "/api/identify", {"files": upload(bomb_png(7000), "b.png")},
                                                    413, "too_large"),  # 49 MP: under the loader's 64, over 40
        "enrol/over the service's pixel limit": ("post", "/api/subjects/s1/images", {
            "files": upload(bomb_png(7000), "b.png", "files")}, 413, "too_large"),
        "identify/no face": ("post", "/api/identify", {"files": upload(no_face_png(), "n.png")}, 422, "no_face"),
        "identify many/missing token": ("post", "/api/identify/many", {
            "files": upload(face, "a.pgm", "files"), "data": {"mode": "batch"}}, 401, "missing_token"),
        "identify many/bad mode": ("post", "/api/identify/many", {
            "files": upload(face, "a.pgm", "files"), "data": {"mode": "together"}}, 422, "bad_mode"),
        "identify many/no mode": ("post", "/api/identify/many", {"files": upload(face, "a.pgm", "files")}, 422,
                                  "bad_mode"),
        "identify many/no files": ("post", "/api/identify/many", {"data": {"mode": "batch"}}, 422, "no_files"),
        "identify many/top over 100": ("post", "/api/identify/many", {
            "files": upload(face, "a.pgm", "files"), "data": {"mode": "batch", "top": "101"}}, 422, "bad_top"),
        "identify many/too many files": ("post", "/api/identify/many", {
            "files": upload(face, "a.pgm", "files") * 21, "data": {"mode": "batch"}}, 413, "too_many_files"),
        "identify many/no usable face": ("post", "/api/identify/many", {
            "files": upload(no_face_png(), "n.png", "files") + upload(b"%PDF-1.4", "a.pdf", "files"),
            "data": {"mode": "same-person"}}, 422, "no_face"),
        "enrol/no face": ("post", "/api/subjects/s1/images", {"files": upload(no_face_png(), "n.png", "files")}, 422,
                          "no_face"),
        "enrol/blank photo sent as pre-cropped": ("post", "/api/subjects/s1/images", {
            "files": upload(blank_png(), "b.png", "files"), "data": {"precropped": "true"}}, 422, "no_face"),
        "identify/blank photo sent as pre-cropped": ("post", "/api/identify", {
            "files": upload(blank_png(), "b.png"), "data": {"precropped": "true"}}, 422, "no_face"),
        "enrol/many faces": ("post", "/api/subjects/s1/images", {"files": upload(many, "g.png", "files")}, 422,
                             "many_faces"),
        "enrol/one good one bad": ("post", "/api/subjects/s1/images", {
            "files": upload(face, "ok.pgm", "files") + upload(no_face_png(), "n.png", "files")}, 422, "no_face"),
        "enrol/unknown subject": ("post", "/api/subjects/nobody/images", {"files": upload(face, field="files")}, 404,
                                  "unknown_subject"),
        "get/unknown subject": ("get", "/api/subjects/nobody", {}, 404, "unknown_subject"),
        "delete/unknown subject": ("delete", "/api/subjects/nobody", {}, 404, "unknown_subject"),
        "enrol/duplicate image": ("post", "/api/subjects/s1/images", {"files": upload(enrolled_1, field="files")}, 409,
                                  "duplicate_image"),
        "enrol/duplicate under another subject": ("post", "/api/subjects/s2/images", {
            "files": upload(enrolled_2, field="files")}, 409, "duplicate_image"),
        "enrol/no files": ("post", "/api/subjects/s1/images", {"data": {"precropped": "false"}}, 422, "no_files"),
        "enrol/file in the field 'file'": ("post", "/api/subjects/s1/images", {"files": upload(face)}, 422,
                                           "no_files"),
        "create/exists": ("post", "/api/subjects", {"json": {"name": "s1"}}, 409, "subject_exists"),
        "create/malformed json": ("post", "/api/subjects", {"content": b'{"name": ', "headers": {
            "content-type": "application/json"}}, 422, "invalid_request"),
        # a field has one code whichever layer refuses it (FastAPI's type checks had answered invalid_request)
        "create/name not a string": ("post", "/api/subjects", {"json": {"name": ["a"]}}, 422, "bad_name"),
        "create/name a number": ("post", "/api/subjects", {"json": {"name": 123}}, 422, "bad_name"),
        "create/no name": ("post", "/api/subjects", {"json": {}}, 422, "bad_name"),
        "create/name empty": ("post", "/api/subjects", {"json": {"name": ""}}, 422, "bad_name"),
        "create/sql in name": ("post", "/api/subjects", {"json": {"name": "x'); DROP TABLE subjects;--"}}, 422,
                               "bad_name"),
        "create/sql or in name": ("post", "/api/subjects", {"json": {"name": "a' OR '1'='1"}}, 422, "bad_name"),
        "create/traversal name": ("post", "/api/subjects", {"json": {"name": "../../etc/passwd"}}, 422, "bad_name"),
        "create/dot name": ("post", "/api/subjects", {"json": {"name": ".."}}, 422, "bad_name"),
        "create/markup name": ("post", "/api/subjects", {"json": {"name": "<img src=x>"}}, 422, "bad_name"),
        "create/empty name": ("post", "/api/subjects", {"json": {"name": " "}}, 422, "bad_name"),
        "create/fullwidth name": ("post", "/api/subjects", {"json": {"name": "Ａｎｎ"}}, 422, "bad_name"),
        "create/ligature name": ("post", "/api/subjects", {"json": {"name": "ﬁona"}}, 422, "bad_name"),
        "create/mixed-script name": ("post", "/api/subjects", {"json": {"name": "\u0410nn"}}, 422, "bad_name"),
        "get/sql subject": ("get", "/api/subjects/x' OR '1'='1", {}, 404, "unknown_subject"),
        "get/traversal subject": ("get", "/api/subjects/..%2F..%2Fetc%2Fpasswd", {}, 404, "not_found"),
        "image/traversal id": ("get", "/api/images/..%2F..%2Fetc%2Fpasswd/file", {}, 404, "not_found"),
        "image/not an id": ("get", "/api/images/abc/file", {}, 422, "invalid_request"),
        "image/unknown id": ("get", "/api/images/999999/file", {}, 404, "unknown_image"),
        "delete image/unknown": ("delete", "/api/images/999999", {}, 404, "unknown_image"),
        "search/unknown": ("get", "/api/searches/999999", {}, 404, "unknown_search"),
        "identify/bad top": ("post", "/api/identify", {"files": upload(face), "data": {"top": "0"}}, 422,
                             "bad_top"),
        "identify/top over 100": ("post", "/api/identify", {"files": upload(face), "data": {"top": "101"}}, 422,
                                  "bad_top"),
        "identify/top not a number": ("post", "/api/identify", {"files": upload(face), "data": {"top": "x"}}, 422,
                                      "bad_top"),
        "identify/fpir not a number": ("post", "/api/identify", {"files": upload(face), "data": {"fpir": "x"}}, 422,
                                       "bad_fpir"),
        "identify/precropped not a yes or no": ("post", "/api/identify", {"files": upload(face), "data": {
            "precropped": "maybe"}}, 422, "invalid_request"),
        "identify/bad fpir": ("post", "/api/identify", {"files": upload(face), "data": {"fpir": "0.5"}}, 422,
                              "bad_fpir"),
        "identify/no file": ("post", "/api/identify", {"data": {"top": "3"}}, 422, "invalid_request"),
        "identify/two files": ("post", "/api/identify", {"files": upload(face) + upload(face, "b.pgm")}, 422,
                               "many_files"),
        "review/unknown search": ("post", "/api/searches/999999/reviews", {"json": {
            "subject": "s1", "verdict": "match", "reviewer": "a"}}, 404, "unknown_search"),
        "review/malformed json": ("post", "/api/searches/1/reviews", {"content": b"{]", "headers": {
            "content-type": "application/json"}}, 422, "invalid_request"),
        "review/bad verdict": ("post", "/api/searches/{sid}/reviews", {"json": {
            "subject": "s1", "verdict": "yes", "reviewer": "a"}}, 422, "bad_verdict"),
        "review/no verdict": ("post", "/api/searches/{sid}/reviews", {"json": {"subject": "s1", "reviewer": "a"}},
                              422, "bad_verdict"),
        "review/reviewer not a string": ("post", "/api/searches/{sid}/reviews", {"json": {
            "subject": "s1", "verdict": "match", "reviewer": 5}}, 422, "bad_reviewer"),
        "review/no reviewer given": ("post", "/api/searches/{sid}/reviews", {"json": {
            "subject": "s1", "verdict": "match"}}, 422, "bad_reviewer"),
        "review/note not a string": ("post", "/api/searches/{sid}/reviews", {"json": {
            "subject": "s1", "verdict": "match", "reviewer": "a", "note": 5}}, 422, "bad_note"),
        "review/note too long": ("post", "/api/searches/{sid}/reviews", {"json": {
            "subject": "s1", "verdict": "match", "reviewer": "a", "note": "n" * 2001}}, 422, "bad_note"),
        "review/no subject": ("post", "/api/searches/{sid}/reviews", {"json": {
            "verdict": "match", "reviewer": "a"}}, 422, "not_a_candidate"),
        "review/not a candidate": ("post", "/api/searches/{sid}/reviews", {"json": {
            "subject": "x'; DROP TABLE reviews;--", "verdict": "match", "reviewer": "a"}}, 422, "not_a_candidate"),
        "review/note not UTF-8": ("post", "/api/searches/{sid}/reviews", {"content": b'{"subject": "s1", "verdict": '
                                  b'"match", "reviewer": "a", "note": "\\ud800"}', "headers": {
                                      "content-type": "application/json"}}, 422, "bad_note"),
        "search/id beyond 64 bits": ("get", "/api/searches/99999999999999999999", {}, 422, "invalid_request"),
        # the review queue's filters: true or false (or left out), one code each
        "searches/reviewed not a yes or no": ("get", "/api/searches?reviewed=maybe", {}, 422, "bad_reviewed"),
        "searches/reviewed blank": ("get", "/api/searches?reviewed=", {}, 422, "bad_reviewed"),
        "searches/ambiguous not a yes or no": ("get", "/api/searches?ambiguous=2", {}, 422, "bad_ambiguous"),
        "searches/ambiguous with a bad cursor": ("get", "/api/searches?ambiguous=true&before=x", {}, 422,
                                                 "invalid_request"),
        # ids are digits: /api/images/1.0 had answered as image 1
        "image/id with a decimal point": ("get", "/api/images/1.0", {}, 422, "invalid_request"),
        "image file/id with a decimal point": ("get", "/api/images/1.0/file", {}, 422, "invalid_request"),
        "delete image/id with a decimal point": ("delete", "/api/images/1.0", {}, 422, "invalid_request"),
        "image/id with a plus sign": ("get", "/api/images/+1", {}, 422, "invalid_request"),
        "search/id with a decimal point": ("get", "/api/searches/{sid}.0", {}, 422, "invalid_request"),
        "search photo/id with a decimal point": ("get", "/api/searches/{sid}.0/photo.png", {}, 422,
                                                 "invalid_request"),
        "review/id with a decimal point": ("post", "/api/searches/{sid}.0/reviews", {"json": {
            "subject": "s1", "verdict": "match", "reviewer": "a"}}, 422, "invalid_request"),
        "review/no reviewer": ("post", "/api/searches/{sid}/reviews", {"json": {
            "subject": "s1", "verdict": "match", "reviewer": " "}}, 422, "bad_reviewer"),
        "method not allowed": ("put", "/api/subjects", {"json": {}}, 405, "method_not_allowed"),
        "unknown route": ("get", "/api/no/such/route", {}, 404, "not_found"),
        # a trailing slash had been a 307 to an absolute URL built from the Host header (http://evil.example/...)
        "trailing slash": ("get", "/api/subjects/", {"headers": {"Host": "evil.example"}}, 404, "not_found"),
        # a JSON endpoint's body sent as another type had been a 422 "body: Input should be a valid dictionary"
        "create/text body": ("post", "/api/subjects", {"content": b'{"name": "tp"}', "headers": {
            "content-type": "text/plain"}}, 415, "unsupported_media_type"),
        "create/form body": ("post", "/api/subjects", {"content": b"name=tp", "headers": {
            "content-type": "application/x-www-form-urlencoded"}}, 415, "unsupported_media_type"),
        "create/no content type": ("post", "/api/subjects", {"content": b'{"name": "tp"}'}, 415,
                                   "unsupported_media_type"),
        "review/text body": ("post", "/api/searches/{sid}/reviews", {"content": b'{"subject": "s1", "verdict": '
                             b'"match", "reviewer": "a"}', "headers": {"content-type": "text/plain"}}, 415,
                             "unsupported_media_type"),
        "create/json array": ("post", "/api/subjects", {"json": []}, 422, "invalid_request"),
        "create/json null": ("post", "/api/subjects", {"content": b"null", "headers": {
            "content-type": "application/json"}}, 422, "invalid_request"),
    }


CASES = list(_cases(b"", b"", b"", b""))


@pytest.fixture(scope="module")
def cases(served, orl_dir: Path) -> dict:
    """Built per backend (the streamed body is a one-shot generator)."""
    return _cases(orl_bytes(orl_dir, 1, 3), orl_bytes(orl_dir, 1, 1), orl_bytes(orl_dir, 1, 2),
                  many_faces_png(orl_dir))


@pytest.fixture(scope="module")
def search_id(served, orl_dir: Path) -> int:
    r = served.client.post("/api/identify", files=upload(orl_bytes(orl_dir, 1, 4)), headers=AUTH)
    return r.json()["results"][0]["faces"][0]["search_id"]


@pytest.mark.parametrize("name", CASES)
def test_bad_request_is_a_clear_4xx_and_writes_nothing(served, cases, search_id, name):
    method, url, kwargs, status, code = cases[name]
    kwargs = dict(kwargs)
    if "headers" not in kwargs and status != 401:
        kwargs["headers"] = AUTH
    elif status != 401:
        kwargs["headers"] = {**AUTH, **kwargs["headers"]}
    before = state(served.db, served.data_dir)
    r = served.client.request(method.upper(), url.format(sid=search_id), **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json") and "location" not in r.headers
    assert_security_headers(r)  # a 413 decided from Content-Length had none
    err = r.json()["error"]
    assert err["code"] == code and err["message"] and "Traceback" not in err["message"]
    assert state(served.db, served.data_dir) == before


def assert_security_headers(r) -> None:
    from lookalike.service.security import HEADERS

    assert {k.lower(): r.headers.get(k) for k in HEADERS} == {k.lower(): v for k, v in HEADERS.items()}, r.headers


def test_every_answer_has_the_security_headers(served, monkeypatch):
    """A 413 decided from Content-Length (the body limit answers it before the app) and a defect's 500 (answered
    outside every middleware), on the API and on a page, carry the security headers like every other answer."""
    from lookalike.service import pages

    c = TestClient(create_app(served.service, TokenChecker(TOKEN), 1.0), raise_server_exceptions=False)
    too_big = c.post("/api/identify", content=b"x" * (2 << 20),
                     headers={**AUTH, "content-type": "multipart/form-data; boundary=z"})
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "too_large"

    def defect(*args, **kwargs):
        raise RuntimeError("a defect")

    monkeypatch.setattr(served.service, "describe", defect)
    monkeypatch.setattr(pages, "login_form_session", defect)
    api, page = c.get("/api/gallery", headers=AUTH), c.get("/login")
    assert (api.status_code, api.json()["error"]["code"]) == (500, "internal_error")
    assert page.status_code == 500 and page.headers["content-type"].startswith("text/html")
    for r in (too_big, api, page):
        assert_security_headers(r)


def test_json_bodies_say_what_is_wrong(served):
    """Invalid JSON names the body and where parsing stopped (it had said "8: JSON decode error"); JSON that is not
    an object says an object is needed; a body of another type is a 415 saying what to send; a JSON type with a
    charset is JSON."""
    c = served.client

    def message(content: bytes, content_type: str | None = "application/json") -> tuple[int, str]:
        r = c.post("/api/subjects", content=content, headers={**AUTH, **({"content-type": content_type}
                                                                          if content_type else {})})
        return r.status_code, r.json()["error"]["message"]

    assert message(b'{"name": ') == (422, "body: not valid JSON (Expecting value at character 9)")
    assert message(b'{"name": "x",}') == (422, "body: not valid JSON (Expecting property name enclosed in double "
                                               "quotes at character 13)")
    for body in (b"[]", b"null", b'"x"', b""):
        assert message(body) == (422, "body: a JSON object ({...}) is needed"), body
    assert message(b'{"name": "tp"}', "text/plain") == (415, "the body must be JSON, sent with Content-Type: "
                                                             "application/json (got 'text/plain')")
    assert message(b'{"name": "tp"}', None) == (415, "the body must be JSON, sent with Content-Type: "
                                                     "application/json (none was given)")
    r = c.post("/api/subjects", content=b'{"name": "json charset"}',
               headers={**AUTH, "content-type": "application/json; charset=utf-8"})
    assert r.status_code == 201, r.text


def test_a_same_person_error_names_the_apis_mode(served):
    """The API's same-person search says ``mode=same-person`` (it had named the command line's --same-person)."""
    r = served.client.post("/api/identify/many", files=upload(b"%PDF-1.4", "a.pdf", "files"),
                           data={"mode": "same-person"}, headers=AUTH)
    assert r.status_code == 422 and r.json()["error"] == {
        "code": "no_face", "message": "mode=same-person: no photo with exactly one usable face to build a template "
                                      "from"}


def test_a_same_person_search_the_model_cannot_make_is_its_own_error(served, monkeypatch):
    """mode=same-person against a model whose disambiguator reads images is a 409 ``mode_unavailable`` (documented),
    refused before any photo is read; it had been a 422 ``no_face``, as if the photos had no face."""
    from lookalike.service import core

    reads_images = SimpleNamespace(disambiguator_=SimpleNamespace(input="image"))
    monkeypatch.setattr(served.service, "model", reads_images)
    monkeypatch.setattr(core, "check_image", lambda *a, **k: pytest.fail("a photo was read"))
    r = served.client.post("/api/identify/many", files=upload(b"%PDF-1.4", "a.pdf", "files"),
                           data={"mode": "same-person"}, headers=AUTH)
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "mode_unavailable" and "reads embeddings" in r.json()["error"]["message"]
    response = _documented(served.client.get("/openapi.json").json(), "post", "/api/identify/many", r)
    assert "`mode_unavailable`" in response["description"]


def test_a_review_note_may_be_null(served, search_id: int):
    """``note: null`` is a verdict without a note (the core takes None as ""); it had been a 422."""
    r = served.client.post(f"/api/searches/{search_id}/reviews", json={"subject": "s1", "verdict": "inconclusive",
                                                                     "reviewer": "ann", "note": None}, headers=AUTH)
    assert r.status_code == 201, r.text
    assert r.json()["note"] == ""


def test_a_subject_name_in_a_path_is_found_in_its_nfkc_form(served, orl_dir: Path):
    """A name sent decomposed (NFD: "e" and a combining diaeresis) finds the subject stored in its NFKC form, for
    reading, enrolling (the answer and Location name it as stored) and removing; it had been a 404 whose message looked
    like the stored name. A non-ASCII name that matches nothing says which code points it holds and where to look."""
    import unicodedata
    from urllib.parse import quote

    c, name = served.client, "Zoë Ünal"
    decomposed = unicodedata.normalize("NFD", name)
    assert decomposed != name
    assert c.post("/api/subjects", json={"name": name}, headers=AUTH).status_code == 201
    r = c.get(f"/api/subjects/{quote(decomposed, safe='')}", headers=AUTH)
    assert r.status_code == 200 and r.json()["name"] == name, r.text
    r = c.post(f"/api/subjects/{quote(decomposed, safe='')}/images",
               files=upload(orl_bytes(orl_dir, 12, 1), "a.pgm", "files"), headers=AUTH)
    assert r.status_code == 201 and r.json()["subject"] == name, r.text
    assert r.headers["location"] == f"/api/subjects/{quote(name, safe='')}"
    assert c.get(r.headers["location"], headers=AUTH).json()["image_count"] == 1
    lookalike = "Zо\u0451"  # a Cyrillic o and yo: "Zoё" looks like the start of the name
    r = c.get(f"/api/subjects/{quote(lookalike, safe='')}", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_subject"
    message = r.json()["error"]["message"]
    assert "U+043E CYRILLIC SMALL LETTER O" in message and "U+0451" in message, message
    assert "encoded differently may be enrolled: see GET /api/subjects?prefix=Z)" in message, message
    assert "encoded" not in c.get("/api/subjects/nobody", headers=AUTH).json()["error"]["message"]
    r = c.delete(f"/api/subjects/{quote(decomposed, safe='')}", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"subject": name, "removed_images": 1}, r.text
    assert c.get(f"/api/subjects/{quote(name, safe='')}", headers=AUTH).status_code == 404


def test_every_subject_answer_counts_its_images_as_image_count(served, orl_dir: Path):
    """``image_count`` is in the listing, a subject's answer and a created subject's (``images`` is a count in the
    first and a list in the others, kept as it was), and the document says so."""
    c, name = served.client, "Count Check"
    created = c.post("/api/subjects", json={"name": name}, headers=AUTH).json()
    assert (created["image_count"], created["images"]) == (0, [])
    c.post(f"/api/subjects/{name}/images", files=upload(orl_bytes(orl_dir, 13, 1), "a.pgm", "files")
           + upload(orl_bytes(orl_dir, 13, 2), "b.pgm", "files"), headers=AUTH)
    one = c.get(f"/api/subjects/{name}", headers=AUTH).json()
    (listed,) = c.get("/api/subjects", params={"prefix": name}, headers=AUTH).json()
    assert one["image_count"] == listed["image_count"] == listed["images"] == len(one["images"]) == 2
    schemas = c.get("/openapi.json").json()["components"]["schemas"]
    assert {"image_count"} <= set(schemas["Subject"]["required"]) & set(schemas["SubjectSummary"]["required"])
    c.delete(f"/api/subjects/{name}", headers=AUTH)


# --- what the answers say --------------------------------------------------------------------------------------
def test_answers_name_images_and_the_gallery_without_server_paths(served, orl_dir: Path):
    """/api/identify, /api/identify/many (both modes), a stored search and /api/gallery give each candidate's image as
    its API address and the gallery by a name without a folder: they had given the server's paths (``.../g.sqlite``,
    ``.../images/82/8247...pgm``). The database keeps the paths, as every search stored before holds them: a stored
    search is answered without them all the same."""
    c = served.client
    root = str(served.data_dir.parent)  # the folder of the SQLite file and of the uploaded images
    many = upload(orl_bytes(orl_dir, 3, 7), "a.pgm", "files") + upload(orl_bytes(orl_dir, 3, 8), "b.pgm", "files")
    docs = [c.post("/api/identify", files=upload(orl_bytes(orl_dir, 2, 6)), data={"top": "3"}, headers=AUTH),
            c.post("/api/identify/many", files=many, data={"mode": "batch", "top": "3"}, headers=AUTH),
            c.post("/api/identify/many", files=many, data={"mode": "same-person", "top": "3"}, headers=AUTH)]
    sid = docs[0].json()["results"][0]["faces"][0]["search_id"]
    search, gallery = c.get(f"/api/searches/{sid}", headers=AUTH), c.get("/api/gallery", headers=AUTH)
    for r in (*docs, search, gallery):
        assert r.status_code == 200 and root not in r.text, r.text
    from lookalike.service.core import gallery_name

    shown = "g.sqlite" if not served.db.startswith("postgresql") else gallery_name(served.db)
    assert gallery.json()["gallery"] == shown
    for doc in [r.json() for r in docs] + [search.json()["result"]]:
        assert doc["gallery"] == shown
        candidates = [x for r in doc["results"] for f in r["faces"] for x in f["candidates"]]
        assert candidates and all(x["image"] == f"/api/images/{x['image_id']}/file" for x in candidates)
    assert c.get(candidates[0]["image"], headers=AUTH).status_code == 200
    with open_store(served.db) as store:
        assert root in json.dumps(store.get_search(sid).result)  # what the database holds: the paths


def test_a_gallery_is_named_without_its_folder_or_password():
    from lookalike.service.core import gallery_name

    assert gallery_name("/srv/cases/G.sqlite") == "G.sqlite"
    assert gallery_name("postgresql://ann:secret@db.example:5433/faces?schema=s1&vectors=/srv/v&sslmode=require") \
        == "postgresql://db.example:5433/faces?schema=s1"
    assert gallery_name("postgresql://ann:***@db.example/faces") == "postgresql://db.example/faces"
    assert gallery_name("postgresql:///test?host=/var/run/postgresql&schema=faces") == "postgresql:///test?schema=faces"


def test_searches_are_listed_a_page_at_a_time(served, orl_dir: Path):
    """GET /api/searches pages by id, newest first (``before``: the last id of the previous page); a full page
    carries a relative ``Link: <...>; rel="next"`` (it had offered no way past the newest 1,000)."""
    c = served.client
    for person in (1, 2, 3):
        assert c.post("/api/identify", files=upload(orl_bytes(orl_dir, person, 10)), headers=AUTH).status_code == 200
    everyone = [s["id"] for s in c.get("/api/searches", params={"limit": 1000}, headers=AUTH).json()]
    assert len(everyone) >= 3 and everyone == sorted(everyone, reverse=True)
    pages, url = [], "/api/searches?limit=2"
    while url:
        r = c.get(url, headers={**AUTH, "Host": "evil.example"})
        assert r.status_code == 200, r.text
        pages.append([s["id"] for s in r.json()])
        url = r.links.get("next", {}).get("url")
        assert url is None or url.startswith("/api/searches?")  # relative: no Host header a client sent
    assert [i for p in pages for i in p] == everyone and len(pages[-1]) < 2 and max(map(len, pages)) == 2
    after_first = c.get("/api/searches", params={"before": everyone[0], "limit": 1000}, headers=AUTH).json()
    assert [s["id"] for s in after_first] == everyone[1:]
    for bad in ({"before": 0}, {"before": "x"}, {"before": 2**63}):
        assert c.get("/api/searches", params=bad, headers=AUTH).status_code == 422


def test_searches_are_filtered_for_the_review_queue(served, orl_dir: Path):
    """GET /api/searches?reviewed=&ambiguous= lists only the searches with (true) or without (false) a verdict and
    only the ambiguous (or unambiguous) ones, with the ``before`` cursor, newest first; each full page's Link keeps the
    filters; the parameters are documented (the filters had been ignored: every search listed)."""
    c, store = served.client, served.service.store
    ids = [c.post("/api/identify", files=upload(orl_bytes(orl_dir, p, 9)), data={"top": "2"}, headers=AUTH)
           .json()["results"][0]["faces"][0]["search_id"] for p in (1, 2, 3, 4)]
    first = store.get_search(ids[0], with_probe=True)  # the same search stored again, ambiguous this time
    result = json.loads(json.dumps(first.result))
    result["results"][0]["faces"][0]["ambiguous"] = True
    ids.append(store.add_search(first.probe, first.probe_sha1, result))
    for sid in (ids[1], ids[4]):
        subject = c.get(f"/api/searches/{sid}", headers=AUTH).json()["result"]["results"][0]["faces"][0][
            "candidates"][0]["subject"]
        assert c.post(f"/api/searches/{sid}/reviews", json={"subject": subject, "verdict": "inconclusive",
                                                            "reviewer": "ann"}, headers=AUTH).status_code == 201
    everyone = c.get("/api/searches", params={"limit": 1000}, headers=AUTH).json()
    for s in everyone:  # the summary's flag is the stored result's
        stored = c.get(f"/api/searches/{s['id']}", headers=AUTH).json()["result"]["results"][0]["faces"][0]
        assert s["ambiguous"] == stored["ambiguous"], s["id"]

    def listed(**filters) -> list[int]:
        r = c.get("/api/searches", params={"limit": 1000, **filters}, headers=AUTH)
        assert r.status_code == 200, r.text
        return [s["id"] for s in r.json()]

    awaiting = [s["id"] for s in everyone if s["reviews"] == 0]
    assert listed(reviewed="false") == awaiting and ids[1] not in awaiting and ids[2] in awaiting
    assert listed(reviewed="true") == [s["id"] for s in everyone if s["reviews"]] and ids[4] in listed(reviewed=True)
    assert listed(ambiguous="true") == [s["id"] for s in everyone if s["ambiguous"]] and ids[4] in listed(
        ambiguous="true")
    assert listed(ambiguous="false") == [s["id"] for s in everyone if not s["ambiguous"]]
    assert listed(reviewed="true", ambiguous="true") == [s["id"] for s in everyone if s["reviews"] and s["ambiguous"]]
    assert listed(reviewed="false", before=ids[3]) == [i for i in awaiting if i < ids[3]]
    pages, url = [], "/api/searches?reviewed=false&limit=1"  # each page's Link keeps the filter
    while url:
        r = c.get(url, headers=AUTH)
        pages.append([s["id"] for s in r.json()])
        url = r.links.get("next", {}).get("url")
        assert url is None or ("reviewed=false" in url and url.startswith("/api/searches?"))
    assert [i for p in pages for i in p] == awaiting
    for name in ("reviewed", "ambiguous"):  # the service checks them too, with the same codes
        with pytest.raises(ServiceError) as refused:
            served.service.list_searches(**{name: "false"})
        assert (refused.value.status, refused.value.code) == (422, f"bad_{name}")
    parameters = {p["name"]: p for p in c.get("/openapi.json").json()["paths"]["/api/searches"]["get"]["parameters"]}
    for name in ("reviewed", "ambiguous"):
        assert parameters[name]["in"] == "query" and not parameters[name].get("required")
        assert {"type": "boolean"} in parameters[name]["schema"]["anyOf"] and parameters[name]["description"]


def test_created_answers_say_where_the_result_is(served, orl_dir: Path):
    """A 201 carries a relative Location (there had been none): a created subject's address; after an enrolment, the
    subject's (its images are listed there); after a verdict, the search's (its reviews are listed there)."""
    c = served.client
    r = c.post("/api/subjects", json={"name": "Lee Example (7)"}, headers=AUTH)
    subject = "/api/subjects/Lee%20Example%20%287%29"
    assert r.status_code == 201 and r.headers["location"] == subject
    assert c.get(subject, headers=AUTH).json()["name"] == "Lee Example (7)"
    r = c.post(f"{subject}/images", files=upload(orl_bytes(orl_dir, 7, 1), "1.pgm", "files"), headers=AUTH)
    assert r.status_code == 201 and r.headers["location"] == subject
    assert r.json()["images"][0]["image_id"] in [i["id"] for i in c.get(subject, headers=AUTH).json()["images"]]
    sid = c.post("/api/identify", files=upload(orl_bytes(orl_dir, 7, 2)), headers=AUTH).json()["results"][0][
        "faces"][0]["search_id"]
    r = c.post(f"/api/searches/{sid}/reviews", json={"subject": "Lee Example (7)", "verdict": "match",
                                                     "reviewer": "J. Doe"}, headers=AUTH)
    assert r.status_code == 201 and r.headers["location"] == f"/api/searches/{sid}"
    assert r.json()["id"] in [x["id"] for x in c.get(f"/api/searches/{sid}", headers=AUTH).json()["reviews"]]


def test_a_subject_created_again_says_when(served, orl_dir: Path):
    """A subject removed and created again says when it was created again (it had kept its first ``created``); the
    search and the verdict naming it still name it."""
    import time

    c = served.client
    first = c.post("/api/subjects", json={"name": "again"}, headers=AUTH).json()["created"]
    assert c.post("/api/subjects/again/images", files=upload(orl_bytes(orl_dir, 8, 1), "1.pgm", "files"),
                  headers=AUTH).status_code == 201
    (face,) = c.post("/api/identify", files=upload(orl_bytes(orl_dir, 8, 2)), headers=AUTH).json()["results"][0][
        "faces"]
    assert face["candidates"][0]["subject"] == "again"
    review = {"subject": "again", "verdict": "match", "reviewer": "J. Doe"}
    assert c.post(f"/api/searches/{face['search_id']}/reviews", json=review, headers=AUTH).status_code == 201
    assert c.delete("/api/subjects/again", headers=AUTH).status_code == 200
    time.sleep(0.01)
    r = c.post("/api/subjects", json={"name": "again"}, headers=AUTH)
    assert r.status_code == 201 and r.json()["created"] > first and r.json()["images"] == []
    assert c.get("/api/subjects/again", headers=AUTH).json()["created"] == r.json()["created"]
    search = c.get(f"/api/searches/{face['search_id']}", headers=AUTH).json()
    assert search["result"]["results"][0]["faces"][0]["candidates"][0]["subject"] == "again"
    assert [x["subject"] for x in search["reviews"]] == ["again"]


# --- tokens and schema versions ---------------------------------------------------------------------------------
def test_created_token_is_stored_hashed_and_works(tmp_path: Path, orl_dir: Path, capsys):
    from lookalike.cli import main

    db = str(tmp_path / "g.sqlite")
    assert main(["serve", "--db", db, "--matcher", FAST_MATCHER, "--create-token", "--token-label", "ann"]) == 0
    token = capsys.readouterr().out.strip()
    assert len(token) >= 40
    with open_store(db, create=False) as store:
        (rec,) = store.list_tokens()
        assert rec.label == "ann" and rec.hash == hash_token(token, rec.salt) and token not in (rec.hash, rec.salt)
    second = create_token_in(db)
    service = Service(db, data_dir=tmp_path / "images", engines=1)
    try:
        client = TestClient(create_app(service, TokenChecker(None)))
        for t in (token, second):
            r = client.post("/api/subjects", json={"name": f"p{t[:4]}"}, headers={"Authorization": f"Bearer {t}"})
            assert r.status_code == 201, r.text
        bad = client.post("/api/subjects", json={"name": "q"}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert bad.status_code == 401
    finally:
        service.close()
    raw = Path(db).read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("g.sqlite-*"))
    assert token.encode() not in raw and second.encode() not in raw


def test_tokens_are_listed_and_revoked_with_their_page_sessions(tmp_path: Path, capsys):
    import re

    from lookalike.cli import main

    db = str(tmp_path / "g.sqlite")
    assert main(["serve", "--db", db, "--matcher", FAST_MATCHER, "--create-token", "--token-label", "ann"]) == 0
    token = capsys.readouterr().out.strip()
    other = create_token_in(db, "bob")
    assert main(["serve", "--db", db, "--list-tokens"]) == 0
    listed = capsys.readouterr().out
    assert re.search(r"\| 1 \| ann \| \d{4}-", listed) and "| 2 | bob |" in listed
    assert token not in listed and other not in listed
    service = Service(db, data_dir=tmp_path / "images", engines=1)
    try:
        client = TestClient(create_app(service, TokenChecker(None)), follow_redirects=False)
        page = client.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        assert client.post("/login", data={"token": token, "csrf": csrf}).status_code == 303
        assert client.get("/").status_code == 200 and client.get("/api/subjects").status_code == 200
        assert client.get("/api/subjects", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert main(["serve", "--db", db, "--revoke-token", "1"]) == 0  # from another process, as an admin would
        assert client.get("/api/subjects", headers={"Authorization": f"Bearer {token}"}).status_code == 401
        r = client.get("/")  # the page session it opened is over
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
        assert client.get("/api/subjects").status_code == 401
        assert client.get("/api/subjects", headers={"Authorization": f"Bearer {other}"}).status_code == 200
    finally:
        service.close()
    capsys.readouterr()
    assert main(["serve", "--db", db, "--revoke-token", "1"]) == 2
    assert capsys.readouterr().err == f"lookalike: error: no API token with id 1 in {db} (see --list-tokens)\n"
    assert main(["serve", "--db", str(tmp_path / "none.sqlite"), "--list-tokens"]) == 2
    assert "no gallery in" in capsys.readouterr().err


def test_serve_refuses_to_start_without_a_token(tmp_path: Path, capsys, monkeypatch):
    from lookalike.cli import main

    monkeypatch.delenv("LOOKALIKE_TOKEN", raising=False)
    assert main(["serve", "--db", str(tmp_path / "g.sqlite"), "--matcher", FAST_MATCHER]) == 2
    assert "no API token" in capsys.readouterr().err


OLD_PROVENANCE = "ALTER TABLE searches DROP COLUMN recorded_by; ALTER TABLE reviews DROP COLUMN recorded_by;"
OLD_PROBES = "DROP INDEX searches_probe;"
OLD_SEARCHES = "DROP INDEX searches_ambiguous; ALTER TABLE searches DROP COLUMN ambiguous;"
OLD_KEYS = ("DROP INDEX subjects_lookalike_key; ALTER TABLE subjects DROP COLUMN lookalike_key; "
            "ALTER TABLE state DROP COLUMN key_version;")


@pytest.mark.parametrize("version,drop", [(1, "DROP TABLE tokens; DROP TABLE sessions; DROP TABLE changes;"),
                                          (2, "DROP TABLE sessions; DROP TABLE changes;"), (3, "DROP TABLE changes;"),
                                          (4, ""), (5, ""), (6, ""), (7, "")])
def test_old_schema_is_migrated_and_newer_refused(tmp_path: Path, version: int, drop: str):
    db = tmp_path / "g.sqlite"
    Gallery.create(db, matcher=FAST_MATCHER).close()
    con = sqlite3.connect(db)
    derived = "DROP TABLE derived;" if version < 5 else ""
    provenance = OLD_PROVENANCE if version < 6 else ""
    probes = OLD_PROBES if version < 7 else ""
    con.executescript(f"{drop} {derived} {provenance} {probes} {OLD_SEARCHES} {OLD_KEYS} "
                      f"UPDATE state SET schema_version = {version};")
    con.close()
    service = Service(str(db), data_dir=tmp_path / "images", engines=1)  # migrates to the current version
    try:
        assert service.store.schema_version() == SCHEMA_VERSION
        create_token_in(str(db))
        assert len(service.store.list_tokens()) == 1
        sid, _ = Sessions(service.sessions_store).new(authenticated=True, token="1")
        assert Sessions(service.sessions_store).get(sid).authenticated
    finally:
        service.close()
    con = sqlite3.connect(db)
    con.execute("UPDATE state SET schema_version = 99")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="newer"):
        Service(str(db), data_dir=tmp_path / "images", engines=1)


def test_an_image_folder_that_is_a_file_is_refused_at_start_up(tmp_path: Path, capsys):
    from lookalike.cli import main

    (tmp_path / "notadir").write_text("x")
    assert main(["serve", "--db", str(tmp_path / "s.sqlite"), "--matcher", FAST_MATCHER,
                 "--data-dir", str(tmp_path / "notadir"), "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file, not a folder" in err


@pytest.mark.parametrize("value", ["0", "65", "nan", "-1"])
def test_a_pixel_limit_outside_the_loaders_is_refused_at_start_up(tmp_path: Path, capsys, value: str):
    from lookalike.cli import main

    with pytest.raises(SystemExit) as exit_:  # the option's type refuses it while parsing, as other options do
        main(["serve", "--db", str(tmp_path / "s.sqlite"), "--matcher", FAST_MATCHER, "--max-megapixels", value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--max-megapixels" in err
    with pytest.raises(ValueError, match="pixel limit"):
        Service(str(tmp_path / "t.sqlite"), data_dir=tmp_path / "images", engines=1, max_pixels=64_000_001)


def test_an_enrolled_file_changed_on_disk_is_never_shown_as_the_enrolled_face(orl_dir: Path, tmp_path: Path,
                                                                              caplog):
    """Images enrolled from disk paths: a file replaced since enrolment is refused (409), a removed one 404, instead
    of serving whatever the path holds now; the answers say which image, never the file's path on the server (they
    had named it), which goes to the server's log."""
    from lookalike.cli import main

    folder = tmp_path / "people" / "ann"
    folder.mkdir(parents=True)
    for i in (1, 2):
        (folder / f"{i}.pgm").write_bytes(orl_bytes(orl_dir, 5, i))
    db = str(tmp_path / "g.sqlite")
    assert main(["enroll", "--gallery", str(tmp_path / "people"), "--db", db, "--matcher", FAST_MATCHER,
                 "--cache", "none", "--workers", "1", "--no-progress"]) == 0
    client = TestClient(create_app(Service(db, data_dir=tmp_path / "images", engines=1), TokenChecker(TOKEN)))
    with Gallery.open(db) as g:
        ids = {Path(im.path).name: im.id for im in g.store.list_images()}
    assert client.get(f"/api/images/{ids['1.pgm']}/file", headers=AUTH).status_code == 200
    for i in ids.values():  # drawn once: a picture shown before the change must not come back from memory
        for kind in ("face", "photo"):
            assert client.get(f"/api/images/{i}/{kind}.png", headers=AUTH).status_code == 200
    (folder / "1.pgm").write_bytes(orl_bytes(orl_dir, 6, 1))  # another person's photo under the same name
    (folder / "2.pgm").unlink()
    import os

    os.mkfifo(folder / "2.pgm")  # a named pipe in its place: refused, not read (which would block an engine)
    r = client.get(f"/api/images/{ids['2.pgm']}/file", headers=AUTH)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "image_file_changed")
    (folder / "2.pgm").unlink()
    for url, status, code in ((f"/api/images/{ids['1.pgm']}/file", 409, "image_file_changed"),
                              (f"/api/images/{ids['1.pgm']}/face.png", 409, "image_file_changed"),
                              (f"/api/images/{ids['1.pgm']}/photo.png", 409, "image_file_changed"),
                              (f"/api/images/{ids['2.pgm']}/file", 404, "image_file_missing"),
                              (f"/api/images/{ids['2.pgm']}/face.png", 404, "image_file_missing"),
                              (f"/api/images/{ids['2.pgm']}/photo.png", 404, "image_file_missing")):
        with caplog.at_level("WARNING", logger="lookalike.service.core"):
            r = client.get(url, headers=AUTH)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), url
        image = url.split("/")[3]
        assert r.json()["error"]["message"].startswith(f"image {image}: "), r.text
        assert str(tmp_path) not in r.text and "people" not in r.text and ".pgm" not in r.text, r.text
        assert str(folder) in caplog.text


def test_the_access_log_says_who_did_what(served, orl_dir: Path, tmp_path: Path, capsys):
    """One record a request, with the token it was allowed with: an API call's, a page's session's, none for a
    refused one; ``serve --access-log FILE`` writes them as JSON lines."""
    from lookalike.service.access import access_sink

    records: list[dict] = []
    c = TestClient(create_app(served.service, TokenChecker(TOKEN), access_log=records.append))
    assert c.get("/api/subjects", headers=AUTH).status_code == 200
    assert c.get("/api/subjects").status_code == 401
    assert c.post("/api/identify", files=upload(orl_bytes(orl_dir, 2, 9)), headers=AUTH).status_code == 200
    got = [(r["method"], r["path"], r["status"], r["who"][:4]) for r in records]
    assert got == [("GET", "/api/subjects", 200, "env:"), ("GET", "/api/subjects", 401, ""),
                   ("POST", "/api/identify", 200, "env:")]
    assert all(set(r) == {"time", "method", "path", "status", "who", "ms"} for r in records)
    import re

    csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text).group(1)
    c.post("/login", data={"token": TOKEN, "csrf": csrf, "next": "/"}, follow_redirects=False)
    assert c.get("/").status_code == 200 and records[-1]["path"] == "/" and records[-1]["who"].startswith("env:")
    sink = access_sink(str(tmp_path / "access.jsonl"))
    sink(records[0])
    sink(records[1])
    assert [json.loads(line)["status"] for line in (tmp_path / "access.jsonl").read_text().splitlines()] == [200, 401]
    assert access_sink("none") is None
    # the console log's path is percent-encoded: a request cannot forge a line or send a terminal escape code
    access_sink("-")({**records[0], "path": "/api/subjects/x\n2026 201 DELETE /api/subjects/Ann\x1b[2K"})
    line = capsys.readouterr().err
    assert line.count("\n") == 1 and "\x1b" not in line and "/api/subjects/x%0A2026%20201%20DELETE" in line
    with pytest.raises(ValueError, match="--access-log"):
        access_sink(str(tmp_path / "no" / "such" / "dir" / "a.jsonl"))


# --- requests that must not wait for, or race with, one another ---------------------------------------------
def test_token_checks_do_not_wait_for_an_engine(served):
    """Every engine busy with a long search: a token is still checked at once (it had waited for an engine, so two
    long searches held up every login, page and API call)."""
    import threading

    answers: list[int] = []
    with served.service.engine():  # the only engine, held as a long search would hold it
        t = threading.Thread(target=lambda: answers.append(
            served.client.get("/api/searches/1/probe", headers={"Authorization": "Bearer wrong"}).status_code))
        t.start()
        t.join(timeout=20)
        assert not t.is_alive() and answers == [401]


def test_a_subject_deleted_during_its_enrolment_stays_deleted(served, orl_dir: Path, monkeypatch):
    """DELETE arriving while an enrolment of the subject embeds waits for it, then removes the subject with the new
    image: the enrolment cannot restore it after the DELETE has answered 200."""
    import threading

    from lookalike.service.core import Service, Upload

    service = served.service
    service.create_subject("racer")
    embedding, go_on = threading.Event(), threading.Event()
    real = Service._embed_faces

    def slow(self, *args, **kwargs):
        embedding.set()
        go_on.wait(20)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Service, "_embed_faces", slow)
    results: dict[str, object] = {}
    enrol = threading.Thread(target=lambda: results.update(
        enrol=service.add_images("racer", [Upload("a.pgm", orl_bytes(orl_dir, 9, 1))])))
    enrol.start()
    assert embedding.wait(20)
    delete = threading.Thread(target=lambda: results.update(delete=service.delete_subject("racer")))
    delete.start()
    delete.join(timeout=1.0)
    assert delete.is_alive()  # waits for the enrolment under way
    go_on.set()
    enrol.join(timeout=60)
    delete.join(timeout=60)
    assert results["enrol"]["added"] == 1 and results["delete"]["removed_images"] == 1
    assert served.client.get("/api/subjects/racer", headers=AUTH).status_code == 404


def test_an_enrolment_decodes_its_photos_one_at_a_time(served, orl_dir: Path, monkeypatch):
    """Each photo is decoded, its face found and cut, before the next is decoded (20 decoded first took 3.8 GB)."""
    from lookalike.service import core

    steps: list[str] = []
    real_check = core.check_image
    monkeypatch.setattr(core, "check_image", lambda *a, **k: steps.append("decode") or real_check(*a, **k))
    with served.service.engine() as e:
        aligner = type(e.identifier.aligner)
    real_align = aligner.align_all
    monkeypatch.setattr(aligner, "align_all", lambda self, *a, **k: steps.append("align") or real_align(self, *a, **k))
    r = served.client.post("/api/subjects/s1/images", headers=AUTH,
                           files=[("files", (f"{i}.pgm", orl_bytes(orl_dir, 1, i), "image/x-portable-graymap"))
                                  for i in (5, 6, 7)])
    assert r.status_code == 201, r.text
    assert steps == ["decode", "align"] * 3


def test_names_in_one_script_are_accepted(served):
    """The look-alike checks refuse no plain name: Cyrillic, Greek, Japanese (kanji with kana) and accented Latin."""
    for name in ("Анна Петрова", "Νίκος", "山田 はなこ", "Zoë Ødegård-Ñúñez"):
        r = served.client.post("/api/subjects", json={"name": name}, headers=AUTH)
        assert r.status_code == 201, (name, r.text)


def test_wrong_tokens_are_throttled_by_address(served):
    """Ten wrong tokens within a minute from one address: the next try is a 429 with the wait, the right token
    included, on the API and on the login page; other addresses are not held up; the count ages out."""
    from lookalike.service.security import WrongTokens

    app = create_app(served.service, TokenChecker(TOKEN))
    c = TestClient(app)
    for _ in range(10):
        assert c.get("/api/subjects", headers={"Authorization": "Bearer guess"}).status_code == 401
    r = c.get("/api/subjects", headers=AUTH)
    assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_wrong_tokens" and " s" in r.text
    assert 0 < int(r.headers["retry-after"]) <= 60
    import re

    page = c.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    r = c.post("/login", data={"token": TOKEN, "csrf": csrf, "next": "/"}, follow_redirects=False)
    assert r.status_code == 429 and "Too many wrong tokens" in r.text
    assert r.headers["content-type"].startswith("text/html") and int(r.headers["retry-after"]) <= 60
    other = TestClient(app, client=("203.0.113.9", 50000))  # the same server, another address
    assert other.get("/api/subjects", headers=AUTH).status_code == 200
    w = WrongTokens(limit=2, window=60.0, max_clients=2)
    w.wrong("a", now=0.0)
    w.wrong("a", now=1.0)
    assert w.wait("a", now=30.0) == 30.0 and w.wait("a", now=60.5) == 0.0  # the first aged out
    w.wrong("b", now=2.0)
    w.wrong("c", now=3.0)
    assert w.wait("a", now=2.0) == 0.0  # the least recent address forgotten past max_clients


def test_a_weak_lookalike_token_is_warned_about(tmp_path: Path, capsys, monkeypatch):
    """The token rules live in auth (TokenChecker): under 16 characters refused, under 8 different ones warned about
    (``serve`` prints the checker's warning; it had kept a second copy of the rules)."""
    import uvicorn

    from lookalike.cli import main

    assert TokenChecker(TOKEN).warning is None and TokenChecker().warning is None
    assert "easy to guess" in TokenChecker("passwordpassword").warning
    assert "easy to guess" in TokenChecker("a" * 40).warning
    with pytest.raises(ValueError, match="at least 16 characters"):
        TokenChecker("short-token")
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)  # the server is not started
    db = str(tmp_path / "g.sqlite")
    for token, code, said in (("short-token", 2, "at least 16 characters"), ("passwordpassword", 0, "easy to guess"),
                              (TOKEN, 0, "")):
        monkeypatch.setenv("LOOKALIKE_TOKEN", token)
        assert main(["serve", "--db", db, "--matcher", FAST_MATCHER, "--access-log", "none"]) == code
        err = capsys.readouterr().err
        assert said in err and ("easy to guess" in err) == (said == "easy to guess"), err


def test_head_is_answered_as_get_without_a_body(served, orl_dir: Path):
    """HEAD (uptime checks) gets its GET's status and headers, no body; a HEAD of a write is still refused. (And an
    FPIR a hair off a calibrated one is searched and recorded as that one.)"""
    c = served.client
    get, head = c.get("/api/health"), c.head("/api/health")
    assert head.status_code == 200 == get.status_code and head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]
    assert c.head("/api/subjects").status_code == 401 and c.head("/api/subjects", headers=AUTH).status_code == 200
    assert c.head("/api/identify").status_code == 405  # a POST route
    r = c.post("/api/identify", files=upload(orl_bytes(orl_dir, 2, 9)), data={"fpir": "0.0100000001"}, headers=AUTH)
    assert r.status_code == 200 and r.json()["fpir"] == 0.01
    assert r.json()["results"][0]["faces"][0]["decision"]["fpir"] == 0.01


def test_a_photo_searched_twice_shows_its_probe_on_both_searches(served, orl_dir: Path):
    """The probe photo is kept once (with the first search); the second search's probe, photo and case report read
    it from there."""
    photo = orl_bytes(orl_dir, 3, 9)
    ids = []
    for _ in range(2):
        r = served.client.post("/api/identify", files=upload(photo), headers=AUTH)
        assert r.status_code == 200, r.text
        ids.append(r.json()["results"][0]["faces"][0]["search_id"])
    for sid in ids:
        assert served.client.get(f"/api/searches/{sid}/probe", headers=AUTH).content == photo
        assert served.client.get(f"/api/searches/{sid}/photo.png", headers=AUTH).status_code == 200
        assert served.client.get(f"/api/searches/{sid}/report.html", headers=AUTH).status_code == 200


def body_reads(app) -> tuple[object, list[int]]:
    """``app`` wrapped to record the size of each body chunk it reads from the client."""
    reads: list[int] = []

    async def counting(scope, receive, send):
        async def counted():
            message = await receive()
            reads.append(len(message.get("body", b"")))
            return message

        await app(scope, counted, send)

    return counting, reads


def test_a_caller_without_a_token_or_session_is_refused_before_the_body_is_read(served, orl_dir: Path):
    """An upload without a token, with a wrong one, from a throttled address, or a page's form without a session is
    answered (401, 429, to the login page) without reading the body: FastAPI had read and parsed the whole multipart
    upload (up to --max-upload-mb, spooled to disk) before its dependencies checked the token."""
    app, reads = body_reads(create_app(served.service, TokenChecker(TOKEN)))
    c = TestClient(app, follow_redirects=False)
    big = upload(b"\xff\xd8\xff" + bytes(300_000))
    for headers, status, code in (({}, 401, "missing_token"), ({"Authorization": "Bearer guess"}, 401, "bad_token")):
        for url, files in (("/api/identify", big), ("/api/identify/many", upload(big[0][1][1], field="files")),
                           ("/api/subjects/s1/images", upload(big[0][1][1], field="files"))):
            r = c.post(url, files=files, data={"mode": "batch"}, headers=headers)
            assert (r.status_code, r.json()["error"]["code"]) == (status, code), (url, r.text)
            assert reads == [], url
    for _ in range(10):
        c.get("/api/subjects", headers={"Authorization": "Bearer guess"})
    r = c.post("/api/identify", files=big, headers=AUTH)  # the right token from a throttled address
    assert r.status_code == 429 and reads == []
    for url in ("/identify", "/enrol", "/review/1"):  # pages' forms without a session: to the login page
        r = c.post(url, files=upload(big[0][1][1], field="file" if url == "/identify" else "files"),
                   data={"csrf": "x"})
        assert r.status_code == 303 and r.headers["location"].startswith("/login") and reads == [], url
    ok = TestClient(app, client=("203.0.113.7", 50000))  # another address, with the token: read and searched
    r = ok.post("/api/identify", files=upload(orl_bytes(orl_dir, 1, 9)), headers=AUTH)
    assert r.status_code == 200 and sum(reads) > 0, r.text


def test_a_pruned_search_is_gone_from_a_running_service(served, orl_dir: Path, capsys, monkeypatch):
    """``gallery prune-searches`` on the database of a running service: the pruned search is a 404 everywhere, its
    pictures too (they had been answered from the service's memory of pictures it had drawn); a reviewed one stays."""
    from lookalike.cli import main

    ids = []
    for person in (1, 2):
        r = served.client.post("/api/identify", files=upload(orl_bytes(orl_dir, person, 8)), headers=AUTH)
        ids.append(r.json()["results"][0]["faces"][0]["search_id"])
    subject = served.client.get(f"/api/searches/{ids[1]}", headers=AUTH).json()["result"]["results"][0]["faces"][0][
        "candidates"][0]["subject"]
    review = {"subject": subject, "verdict": "match", "reviewer": "J. Doe"}
    assert served.client.post(f"/api/searches/{ids[1]}/reviews", json=review, headers=AUTH).status_code == 201
    for sid in ids:
        for kind in ("photo.png", "face.png", "probe"):
            assert served.client.get(f"/api/searches/{sid}/{kind}", headers=AUTH).status_code == 200
    read_before = served.service.get_search(ids[0])
    with open_store(served.db) as s:
        s._exec("UPDATE searches SET created = '2000-01-01T00:00:00.000+00:00' WHERE id IN (?, ?)", ids)
    assert main(["gallery", "prune-searches", "--db", served.db, "--older-than", "365", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["searches_deleted"], report["reviewed_kept"]) == (1, 1), report
    for kind in ("", "/photo.png", "/face.png", "/probe", "/report.html"):
        r = served.client.get(f"/api/searches/{ids[0]}{kind}", headers=AUTH)
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_search", kind
        assert served.client.get(f"/api/searches/{ids[1]}{kind}", headers=AUTH).status_code == 200, kind
    with monkeypatch.context() as m:  # a verdict on a search read just before it was pruned: a 404, not a 500
        m.setattr(served.service, "get_search", lambda _: read_before)
        with pytest.raises(ServiceError) as e:
            served.service.add_review(ids[0], subject, "match", "J. Doe")
        assert (e.value.status, e.value.code) == (404, "unknown_search")


# --- the OpenAPI document: a contract a client can be generated from ----------------------------------------------
def _template(doc: dict, url: str) -> str | None:
    """The document's path that ``url`` is an instance of, or None."""
    from urllib.parse import unquote, urlsplit

    parts = unquote(urlsplit(url).path).split("/")
    for template in doc["paths"]:
        t = template.split("/")
        if len(t) == len(parts) and all(a == b or (a.startswith("{") and b) for a, b in zip(t, parts, strict=True)):
            return template
    return None


def _operation(doc: dict, method: str, url: str) -> dict | None:
    """The document's operation that ``method url`` is (None when it is none: an unknown route or method)."""
    template = _template(doc, url)
    return None if template is None else doc["paths"][template].get(method.lower())


def _documented(doc: dict, method: str, url: str, r) -> dict:
    """The document's response for answer ``r`` of ``method url``, checked: its status listed, its content type too,
    and a JSON body valid against the schema given for it."""
    jsonschema = pytest.importorskip("jsonschema")
    op = _operation(doc, method, url)
    assert op is not None, f"{method} {url}: not in the document"
    response = op["responses"].get(str(r.status_code))
    assert response is not None, f"{method} {url} answered {r.status_code}, not listed: {sorted(op['responses'])}"
    media = r.headers["content-type"].split(";")[0]
    assert media in response.get("content", {}), f"{method} {url} -> {r.status_code}: {media} not listed"
    if media == "application/json":
        schema = {**response["content"][media]["schema"], "components": doc["components"]}
        jsonschema.Draft202012Validator(schema).validate(r.json())
    return response


def test_every_answer_matches_the_openapi_document(served, orl_dir: Path):
    """A real answer of every operation (JSON, pictures, the HTML report) has its status and content type listed for
    its operation and validates against the schema the document gives (the answers themselves are unchanged: every
    other test here checks them)."""
    c, doc = served.client, served.client.get("/openapi.json").json()
    who = "Openapi Check"
    calls = [("GET", "/api/health", {}), ("GET", "/api/gallery", {}),
             ("POST", "/api/subjects", {"json": {"name": who}}),
             ("POST", f"/api/subjects/{who}/images", {"files": upload(orl_bytes(orl_dir, 11, 1), "a.pgm", "files")}),
             ("GET", "/api/subjects", {}), ("GET", f"/api/subjects/{who}", {})]
    answers = {(m, url): c.request(m, url, headers=AUTH, **kw) for m, url, kw in calls}
    image_id = answers["POST", f"/api/subjects/{who}/images"].json()["images"][0]["image_id"]
    r = c.post("/api/identify", files=upload(orl_bytes(orl_dir, 11, 3)), data={"top": "3"}, headers=AUTH)
    answers["POST", "/api/identify"] = r
    sid = r.json()["results"][0]["faces"][0]["search_id"]
    for mode in ("batch", "same-person"):
        answers["POST", f"/api/identify/many?{mode}"] = c.post(
            "/api/identify/many", files=upload(orl_bytes(orl_dir, 11, 4), "a.pgm", "files")
            + upload(b"%PDF-1.4", "b.pdf", "files"), data={"mode": mode, "top": "2"}, headers=AUTH)
    answers["POST", f"/api/searches/{sid}/reviews"] = c.post(f"/api/searches/{sid}/reviews", json={
        "subject": who, "verdict": "match", "reviewer": "ann"}, headers=AUTH)
    for url in ("/api/searches", f"/api/searches/{sid}", f"/api/searches/{sid}/probe", f"/api/searches/{sid}/photo.png",
                f"/api/searches/{sid}/face.png", f"/api/searches/{sid}/report.html", f"/api/images/{image_id}",
                f"/api/images/{image_id}/file", f"/api/images/{image_id}/photo.png",
                f"/api/images/{image_id}/face.png"):
        answers["GET", url] = c.get(url, headers=AUTH)
    for url in (f"/api/images/{image_id}", f"/api/subjects/{who}"):
        answers["DELETE", url] = c.delete(url, headers=AUTH)
    assert {(m.lower(), _template(doc, url)) for m, url in answers} == {
        (m, t) for t, operations in doc["paths"].items() for m in operations}  # every operation is answered above
    for (method, url), r in answers.items():
        assert r.status_code in (200, 201), (method, url, r.text)
        schema = _documented(doc, method, url.split("?")[0], r)["content"].get("application/json", {}).get("schema")
        assert schema is None or "$ref" in schema.get("items", schema), (method, url, schema)  # not a free-form object
    face = answers["POST", "/api/identify"].json()["results"][0]["faces"][0]
    assert "tied_with" in doc["components"]["schemas"]["Candidate"]["properties"] and "tied_with" in \
        face["candidates"][0]


def test_every_error_is_documented_on_its_operation(served, orl_dir: Path, search_id: int):
    """Each bad request of ``_cases`` (every error the tests provoke) answers a status its operation lists, an
    ``Error`` body, and a code the status's description names; FastAPI's ``HTTPValidationError``, which the service
    never sends, is nowhere."""
    c, doc = served.client, served.client.get("/openapi.json").json()
    assert "HTTPValidationError" not in json.dumps(doc)
    cases = _cases(orl_bytes(orl_dir, 1, 3), orl_bytes(orl_dir, 1, 1), orl_bytes(orl_dir, 1, 2),
                   many_faces_png(orl_dir))
    checked = 0
    for name, (method, url, kwargs, status, code) in cases.items():
        url = url.format(sid=search_id)
        if _operation(doc, method, url) is None:  # no such route or method: not an operation's answer
            assert status in (404, 405), name
            continue
        headers = kwargs.get("headers", {}) if status == 401 else {**AUTH, **kwargs.get("headers", {})}
        r = c.request(method.upper(), url, **{**kwargs, "headers": headers})
        assert r.status_code == status, (name, r.text)
        response = _documented(doc, method, url, r)
        assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, name
        assert f"`{code}`" in response["description"], (name, response["description"])
        checked += 1
    assert checked >= 60


def test_the_openapi_document_says_the_token_and_the_rules(served):
    """The bearer scheme is required on every operation but /api/health, each of which lists 401 and 429; fpir is
    documented as the calibrated rates (and a value a hair off one is still searched: the HEAD test); a subject's
    name has its length; pictures have their content types."""
    doc = served.client.get("/openapi.json").json()
    bearer = doc["components"]["securitySchemes"]["bearer"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    for path, operations in doc["paths"].items():
        for op in operations.values():
            if path == "/api/health":
                assert "security" not in op and set(op["responses"]) == {"200"}
            else:
                assert op["security"] == [{"bearer": []}] and {"401", "429", "503"} <= set(op["responses"]), path
    schemas = doc["components"]["schemas"]
    for body in ("Body_identify_api_identify_post", "Body_identify_many_api_identify_many_post"):
        assert schemas[body]["properties"]["fpir"]["enum"] == [0.001, 0.01, 0.1]
    assert schemas["SubjectIn"]["properties"]["name"]["maxLength"] == 100
    pictures = {p: set(doc["paths"][p]["get"]["responses"]["200"]["content"]) for p in doc["paths"]
                if p.endswith((".png", "/file", "/probe"))}
    assert len(pictures) == 6
    for path, media in pictures.items():
        assert media == {"image/png"} if path.endswith(".png") else {"image/jpeg", "image/heic", "image/png",
                                                                     "application/octet-stream"} <= media
