"""API tokens (hashed at rest) and page sessions (an HttpOnly cookie with a CSRF token per session).

A token is 32 random bytes (URL-safe base64). The store keeps only a per-token salt and
``sha256(salt + token)``; a token given by the environment (``LOOKALIKE_TOKEN``) is hashed the same way in
memory. Pages log in with a token and get a session cookie (HttpOnly, SameSite=Strict), the session kept in the
gallery's database under a hash of its id; every form POST carries the session's CSRF token in a hidden field.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

from lookalike.gallery.store import GalleryStore, SessionRecord

SESSION_COOKIE = "lookalike_session"
SESSION_SECONDS = 12 * 3600
LOGIN_COOKIE = "lookalike_login"  # a visitor's login form CSRF value, in the visitor's cookie only
LOGIN_SECONDS = 3600
MIN_TOKEN_CHARS = 16  # a shorter LOOKALIKE_TOKEN is refused
MIN_DIFFERENT_CHARS = 8  # one of fewer different characters (passwordpassword: 7) is warned about
ENV_TOKEN = "env"  # the token given by LOOKALIKE_TOKEN, as TokenChecker.match names it: "env:<fingerprint>"


def hash_token(token: str, salt: str) -> str:
    return hashlib.sha256((salt + token).encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def create_token(store: GalleryStore, label: str = "") -> str:
    """A new token: its salted hash goes into the store, the token itself is returned (to print once)."""
    token = new_token()
    salt = secrets.token_hex(16)
    store.add_token(label, salt, hash_token(token, salt))
    return token


def env_token_warning(token: str) -> str | None:
    """The strength rules of a ``LOOKALIKE_TOKEN``: ValueError when it is too short to use (under
    :data:`MIN_TOKEN_CHARS` characters); why it is easy to guess (under :data:`MIN_DIFFERENT_CHARS` different
    characters), or None."""
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"LOOKALIKE_TOKEN must be at least {MIN_TOKEN_CHARS} characters")
    if len(set(token)) >= MIN_DIFFERENT_CHARS:
        return None
    return (f"LOOKALIKE_TOKEN has {len(set(token))} different characters: easy to guess; use random ones "
            "(python -c 'import secrets; print(secrets.token_urlsafe(32))'), or a stored token (serve --create-token)")


class TokenChecker:
    """Verifies bearer tokens against the store's hashes and the optional environment token (refused when too short;
    ``warning``: why it is easy to guess, or None; :func:`env_token_warning`)."""

    def __init__(self, env_token: str | None = None) -> None:
        self.warning = None if env_token is None else env_token_warning(env_token)
        self._env_salt = secrets.token_hex(16)
        self._env_hash = hash_token(env_token, self._env_salt) if env_token else None
        # which LOOKALIKE_TOKEN opened a session (kept with it): a new value ends the old one's sessions
        self._env_name = f"{ENV_TOKEN}:{hash_token(env_token, 'lookalike-env-session')[:16]}" if env_token else None

    def has_tokens(self, store: GalleryStore) -> bool:
        return self._env_hash is not None or bool(store.list_tokens())

    def check(self, token: str | None, store: GalleryStore) -> bool:
        return self.match(token, store) is not None

    def match(self, token: str | None, store: GalleryStore) -> str | None:
        """Which valid token this is: ``"env:<fingerprint>"`` (``LOOKALIKE_TOKEN``, naming which value), a stored
        token's id as text, or None. Every stored hash is compared (constant time each), whichever matches."""
        if not token:
            return None
        found = None
        if self._env_hash is not None and hmac.compare_digest(hash_token(token, self._env_salt), self._env_hash):
            found = self._env_name
        for rec in store.list_tokens():
            if hmac.compare_digest(hash_token(token, rec.salt), rec.hash):
                found = found or str(rec.id)
        return found

    def alive(self, which: str, store: GalleryStore) -> bool:
        """Whether the token :meth:`match` named is still valid (a stored one may have been revoked since)."""
        if which.startswith(ENV_TOKEN):  # the LOOKALIKE_TOKEN of this server, the same value as at login
            return self._env_name is not None and hmac.compare_digest(which, self._env_name)
        return any(str(r.id) == which for r in store.list_tokens())


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


@dataclass
class Session:
    csrf: str
    expires: float
    authenticated: bool = False
    token: str = ""  # the token that logged it in (TokenChecker.match): revoking it ends the session
    reviewer: str = ""
    flash: list[str] = field(default_factory=list)


class Sessions:
    """Page sessions, by the id in their cookie, kept in the gallery's database (``store``: a connection of their
    own, used under a lock) under the SHA-256 of their id, so a restart of the service, or another service process
    on the same gallery, keeps examiners logged in. Flash messages stay in this process."""

    def __init__(self, store: GalleryStore, seconds: int = SESSION_SECONDS) -> None:
        self.seconds = seconds
        self._store = store
        self._flash: dict[str, tuple[float, list[str]]] = {}  # key -> (last used, messages)
        self._lock = threading.Lock()

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        key = _key(sid)
        with self._lock:
            r = self._store.get_session(key)
            if r is None:
                return None
            if r.expires < time.time():
                self._forget(key)
                return None
            return Session(r.csrf, r.expires, r.authenticated, r.token, r.reviewer, self._messages(key))

    def new(self, authenticated: bool = False, token: str = "") -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        s = Session(secrets.token_urlsafe(32), time.time() + self.seconds, authenticated, token)
        with self._lock:
            now = time.time()
            for k in [k for k, (used, _) in self._flash.items() if used < now - self.seconds]:
                del self._flash[k]
            self._write(_key(sid), s, now)
        return sid, s

    def save(self, sid: str | None, session: Session) -> None:
        """Keep a change to ``session`` (e.g. its reviewer name)."""
        if sid:
            with self._lock:
                self._write(_key(sid), session, time.time())

    def drop(self, sid: str | None) -> None:
        with self._lock:
            self._forget(_key(sid or ""))

    def _messages(self, key: str, messages: list[str] | None = None) -> list[str]:
        """The flash messages of a session (kept by this process, as long as the session lives)."""
        messages = messages if messages is not None else self._flash.get(key, (0.0, []))[1]
        self._flash[key] = (time.time(), messages)
        return messages

    def _write(self, key: str, s: Session, now: float) -> None:
        self._messages(key, s.flash)
        self._store.put_session(SessionRecord(key, s.csrf, s.expires, s.authenticated, s.token, s.reviewer), now)

    def _forget(self, key: str) -> None:
        self._flash.pop(key, None)
        self._store.drop_session(key)


def _key(sid: str) -> str:
    """What a session is kept under: the SHA-256 of its id (a copy of the database logs nobody in)."""
    return hashlib.sha256(sid.encode("utf-8")).hexdigest()


def new_login_value() -> str:
    return secrets.token_urlsafe(32)


def login_form_session(value: str) -> Session:
    """A visitor's login form, not logged in: its CSRF value is the one in its own cookie (HttpOnly, SameSite=Strict,
    so no other site can send it or read it), checked against the form's on posting; nothing is stored."""
    return Session(value, time.time() + LOGIN_SECONDS)


def csrf_ok(session: Session | None, submitted: str | None) -> bool:
    """Whether a form's CSRF value is its session's (compared as UTF-8 bytes: ``compare_digest`` refuses non-ASCII
    text, which had answered a forged form 500)."""
    return (session is not None and bool(submitted)
            and hmac.compare_digest(session.csrf.encode(), submitted.encode("utf-8", "replace")))
