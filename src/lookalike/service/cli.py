"""``lookalike serve``: run the web service (or, with ``--create-token``, make an API token and exit)."""

from __future__ import annotations

import argparse
import os
import sys

from lookalike.service.limits import DEFAULT_BUSY_TIMEOUT, DEFAULT_MAX_MEGAPIXELS, DEFAULT_MAX_UPLOAD_MB


def add_parser(sub) -> None:
    from lookalike.cli import add_face_size_options  # built while lookalike.cli makes its parser

    s = sub.add_parser("serve", help="run the face search web service (JSON API and review pages)",
                       description="Serve a gallery over HTTP: enrol, identify, and review candidate lists. Every "
                                   "write and search needs an API token (LOOKALIKE_TOKEN, or --create-token).")
    s.add_argument("--db", required=True, help="gallery (G.sqlite or postgresql://...); created if absent")
    s.add_argument("--model", default=None, help="lookalike model (.lkm), or 'default' (the shipped one for the "
                   "gallery's faces; a new gallery: full resolution); without it, the base matcher")
    add_face_size_options(s)
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    s.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    s.add_argument("--data-dir", default=None,
                   help="folder for uploaded images (default: G.sqlite.images beside a SQLite gallery; for "
                        "PostgreSQL a folder per database under ~/.local/share/lookalike)")
    from lookalike.cli import FRACTION, POSITIVE, _number
    from lookalike.data.images import MAX_PIXELS

    s.add_argument("--max-upload-mb", type=_number(float, 0, lo_open=True, what="a positive number of MB"),
                   default=DEFAULT_MAX_UPLOAD_MB,
                   help=f"largest request body in MB (default: {DEFAULT_MAX_UPLOAD_MB})")
    s.add_argument("--access-log", default="-", metavar="FILE|-|none",
                   help="one record a request (time, method, path, status, which API token, ms): '-' a line on "
                        "standard error (default), a FILE of JSON lines (appended), or 'none'")
    s.add_argument("--max-megapixels", default=DEFAULT_MAX_MEGAPIXELS,
                   type=_number(float, 0, MAX_PIXELS / 1e6, lo_open=True,
                                what=f"megapixels above 0 and at most {MAX_PIXELS / 1e6:g}"),
                   help=f"largest photo, decoded, in megapixels: a larger one is answered 413 (default: "
                        f"{DEFAULT_MAX_MEGAPIXELS}; at most 64; a search's time and memory grow with its pixels)")
    s.add_argument("--busy-timeout", default=DEFAULT_BUSY_TIMEOUT, metavar="S",
                   type=_number(float, 0, lo_open=True, what="a positive number of seconds"),
                   help=f"seconds a request waits for the gallery database while another process writes to it "
                        f"(lookalike enroll, gallery prune-searches) before it is answered 503 store_busy (default: "
                        f"{DEFAULT_BUSY_TIMEOUT:g})")
    from lookalike.matchers import MATCHERS

    s.add_argument("--matcher", choices=MATCHERS, default=None,
                   help="matcher of a gallery this creates (default: the model's, else torch-flip)")
    s.add_argument("--central-fraction", type=FRACTION, default=None,
                   help="a gallery this creates aligns faces HOG misses within a centred square of this fraction of "
                        "the shorter side (default 0.45; ~0.9 for tightly cropped faces; see `lookalike embed "
                        "--help`); an existing gallery keeps its own")
    s.add_argument("--cnn-fallback", action=argparse.BooleanOptionalAction, default=None,
                   help="a gallery this creates looks for faces HOG misses with dlib's CNN detector (see `lookalike "
                        "enroll --help`); an existing gallery keeps its own")
    s.add_argument("--engines", type=POSITIVE, default=2, help="concurrent search/enrol workers (default: 2)")
    s.add_argument("--create-token", action="store_true",
                   help="create an API token, print it once (only its salted hash is stored) and exit")
    s.add_argument("--token-label", default="", help="a label for --create-token (who it is for)")
    s.add_argument("--list-tokens", action="store_true", help="list the API tokens (id, label, created) and exit")
    s.add_argument("--revoke-token", type=int, default=None, metavar="ID",
                   help="revoke API token ID (it stops working at once, with the page sessions it opened) and exit")
    from lookalike.cli import add_blas_threads

    add_blas_threads(s)


def manage_tokens(args: argparse.Namespace) -> int:
    """``--list-tokens`` / ``--revoke-token ID`` on the gallery database (no server started)."""
    from lookalike.service.core import list_tokens_in, revoke_token_in

    if args.revoke_token is not None:
        revoke_token_in(args.db, args.revoke_token)
        print(f"revoked API token {args.revoke_token}", file=sys.stderr)
        return 0
    tokens = list_tokens_in(args.db)
    print("| id | label | created |\n|---|---|---|")
    for t in tokens:
        print(f"| {t['id']} | {t['label']} | {t['created']} |")
    print(f"{len(tokens)} API token(s); LOOKALIKE_TOKEN, if set when serving, is not listed", file=sys.stderr)
    return 0


SHUTDOWN_S = 60  # the longest a stopping server waits for requests under way (a 20-photo batch takes tens of s)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise ValueError("the service needs its extra: pip install 'lookalike[service]'") from None
    from lookalike.service.access import access_sink
    from lookalike.service.app import create_app
    from lookalike.service.auth import TokenChecker
    from lookalike.service.core import Service, create_token_in

    max_pixels = round(args.max_megapixels * 1_000_000)  # checked by its option's type, whole pixels by the Service
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be 1-65535, got {args.port}")
    if args.list_tokens or args.revoke_token is not None:
        return manage_tokens(args)
    model = None
    from lookalike.model import load_face_size_model_for_db, load_model_for_db

    if args.model:
        model = load_model_for_db(args.model, args.db)
    small, sharp = (load_face_size_model_for_db(kind, getattr(args, f"{kind}_face_model"), args.db, args.model, model)
                    for kind in ("small", "sharp"))
    if args.create_token:
        Service(args.db, model, args.data_dir, engines=1, matcher=args.matcher, cnn_fallback=args.cnn_fallback,
                central_fraction=args.central_fraction).close()
        token = create_token_in(args.db, args.token_label)
        print(token)
        print("This token is shown once; only its salted hash is stored. Use it as 'Authorization: Bearer "
              "<token>' or on the login page.", file=sys.stderr)
        return 0
    tokens = TokenChecker(os.environ.get("LOOKALIKE_TOKEN") or None)
    if tokens.warning is not None:
        print(f"lookalike: warning: {tokens.warning}", file=sys.stderr)
    service = Service(args.db, model, args.data_dir, engines=args.engines, matcher=args.matcher, small_faces=small,
                      sharp_faces=sharp, every_scale=args.every_scale, cnn_fallback=args.cnn_fallback,
                      central_fraction=args.central_fraction, max_pixels=max_pixels, busy_timeout=args.busy_timeout)
    try:
        if not tokens.has_tokens(service.store):
            raise ValueError("no API token: set LOOKALIKE_TOKEN or run `lookalike serve --db ... --create-token`")
        app = create_app(service, tokens, args.max_upload_mb, access_sink(args.access_log))
        print(f"lookalike serve: {service.store.url} on http://{args.host}:{args.port}/ "
              f"({'model ' + args.model if args.model else 'base matcher'})", file=sys.stderr)
        from lookalike.cli import blas_threads

        with blas_threads(args.blas_threads):  # requests run in parallel; each one's products are small
            # a stop (Ctrl-C, SIGTERM) lets requests under way finish for up to SHUTDOWN_S seconds, then closes:
            # an upload trickling in had kept a stopped server from exiting for as long as its client went on
            uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                        timeout_graceful_shutdown=SHUTDOWN_S)
    finally:
        service.close()
    return 0
