"""A real OpenID Connect provider for the tests, started on a free loopback port.

Runs panva's `oidc-provider` (npm, pinned in tests/support/oidc/package.json;
`scripts/install_oidc_provider.sh` installs it) under Node.js, with the clients
and users given here. Tokens come from driving the real authorization code +
PKCE flow over HTTP: the provider's interaction routes sign a user in when told
`login=<user>` and grant consent at once (tests/support/oidc/provider.mjs).
Modules that need it import the `oidc_provider` fixture from here.
"""

from __future__ import annotations

import base64
import hashlib
import http.cookiejar
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.postgres import free_port

PROVIDER_DIR = Path(__file__).resolve().parent / "oidc"
READY = "OIDC_PROVIDER_READY"

WEB_CLIENT = "hacs-web"
SERVER_CLIENT = "hacs-server"
SERVER_SECRET = "hacs-server-secret"
REDIRECT_URI = "http://127.0.0.1:8765/auth/callback"
API_RESOURCE = "urn:hacs:api"
DEFAULT_SCOPE = "openid email profile groups"

DEFAULT_CLIENTS: list[dict[str, Any]] = [
    {  # public (browser) client: no secret, PKCE required
        "client_id": WEB_CLIENT,
        "token_endpoint_auth_method": "none",
        "redirect_uris": [REDIRECT_URI],
        "grant_types": ["authorization_code", "refresh_token"],
    },
    {  # confidential client: client_secret_basic (or _post)
        "client_id": SERVER_CLIENT,
        "client_secret": SERVER_SECRET,
        "redirect_uris": [REDIRECT_URI],
        "grant_types": ["authorization_code", "refresh_token"],
    },
]
DEFAULT_USERS: list[dict[str, Any]] = [
    {
        "sub": "user-alice",
        "username": "alice",
        "email": "alice@hospital.test",
        "email_verified": True,
        "name": "Alice Clinician",
        "groups": ["clinicians"],
    },
    {
        "sub": "user-bob",
        "username": "bob",
        "email": "bob@hospital.test",
        "email_verified": True,
        "name": "Bob Admin",
        "groups": ["admins", "clinicians"],
    },
]
DEFAULT_RESOURCES: dict[str, dict[str, Any]] = {API_RESOURCE: {"scope": "hacs"}}


class OidcError(Exception):
    """An OAuth error answer: from the token endpoint or in the redirect to the client."""

    def __init__(self, error: str, description: str = "", status: int | None = None) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description
        self.status = status


def pkce_pair() -> tuple[str, str]:
    """A fresh (code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class _NoRedirects(urllib.request.HTTPErrorProcessor):
    """Hand back every answer as it is: 3xx and 4xx included."""

    def http_response(self, request: Any, response: Any) -> Any:
        return response

    https_response = http_response


class OidcProvider:
    def __init__(
        self,
        clients: list[dict[str, Any]] | None = None,
        users: list[dict[str, Any]] | None = None,
        resources: dict[str, dict[str, Any]] | None = None,
        *,
        pkce: str = "public",
        ttl: dict[str, int] | None = None,
    ) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="hacs-oidc-"))
        self.config: dict[str, Any] = {
            "clients": DEFAULT_CLIENTS if clients is None else clients,
            "users": DEFAULT_USERS if users is None else users,
            "resources": DEFAULT_RESOURCES if resources is None else resources,
            "pkce": pkce,
        }
        if ttl:
            self.config["ttl"] = ttl
        self.process: subprocess.Popen[bytes] | None = None
        self.discovery: dict[str, Any] = {}

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/jwks"

    def start(self) -> None:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError(
                "node is not installed; the machine's Node.js 20+ and npm are needed"
            )
        if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
            raise RuntimeError(
                "oidc-provider is not installed; run scripts/install_oidc_provider.sh "
                "(npm ci in tests/support/oidc)"
            )
        config = self.root / "config.json"
        config.write_text(json.dumps(self.config))
        env = {**os.environ, "OIDC_CONFIG": str(config), "OIDC_EXIT_ON_STDIN_EOF": "1"}
        log_path = self.root / "provider.log"
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [node, str(PROVIDER_DIR / "provider.mjs"), str(self.port)],
                cwd=PROVIDER_DIR,
                env=env,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 90  # node on a loaded machine starts slowly
        while READY not in log_path.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                output = log_path.read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError("oidc-provider did not start:\n" + output)
            time.sleep(0.05)
        self.discovery = self._json("GET", "/.well-known/openid-configuration")

    def stop(self) -> None:
        try:
            if self.process is not None and self.process.poll() is None:
                self.process.terminate()
                self.process.wait(timeout=10)
            if self.process is not None and self.process.stdin is not None:
                self.process.stdin.close()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # --- HTTP -------------------------------------------------------------------------

    def _opener(self, jar: http.cookiejar.CookieJar | None = None) -> urllib.request.OpenerDirector:
        return urllib.request.build_opener(
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPCookieProcessor(jar or http.cookiejar.CookieJar()),
            _NoRedirects(),
        )

    def _json(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        url = path if path.startswith("http") else self.issuer + path
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        with self._opener().open(request, timeout=30) as response:
            body = response.read()
            status = response.status
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            payload = {"error_description": body[:500].decode(errors="replace")}
        if status >= 400:
            raise OidcError(
                payload.get("error", f"http_{status}"),
                payload.get("error_description", ""),
                status,
            )
        return payload

    def jwks(self) -> dict[str, Any]:
        """The provider's JWKS (public keys, the signing key first)."""
        result: dict[str, Any] = self._json("GET", "/jwks")
        return result

    def rotate_keys(self, keep_old: bool = True) -> str:
        """A new RS256 signing key, first in the JWKS; returns its kid.

        The old keys stay in the JWKS (verifiable, no longer used) unless keep_old is False.
        """
        result = self._json("POST", "/__test/rotate", {"keep_old": "1" if keep_old else "0"})
        return str(result["kid"])

    # --- the authorization code flow ---------------------------------------------------

    def authorize_url(
        self,
        client_id: str,
        redirect_uri: str,
        code_challenge: str | None,
        *,
        state: str,
        nonce: str | None = None,
        scope: str = DEFAULT_SCOPE,
        resource: str | None = None,
        **extra: str,
    ) -> str:
        """The authorization endpoint URL a browser would be sent to (response_type=code)."""
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": state,
        }
        if code_challenge is not None:
            params |= {"code_challenge": code_challenge, "code_challenge_method": "S256"}
        if nonce is not None:
            params["nonce"] = nonce
        if resource is not None:
            params["resource"] = resource
        params |= extra
        return f"{self.discovery['authorization_endpoint']}?{urllib.parse.urlencode(params)}"

    def follow(self, url: str, user: str, redirect_uri: str = REDIRECT_URI) -> str:
        """Drive a browser's sign-in from authorization URL `url`: returns the URL of the
        redirect back to redirect_uri (code, state and iss, or error), not fetched.

        Follows the provider's redirects through login (as `user`: sub, username or email)
        and consent, in a fresh cookie jar (no single sign-on session).
        """
        opener = self._opener()
        for _ in range(10):
            with opener.open(url, timeout=30) as response:
                status, location = response.status, response.headers.get("Location")
                body = response.read()
            if status not in (302, 303) or not location:
                raise OidcError(
                    "unexpected_response",
                    f"{status} from {url}: {body[:500].decode(errors='replace')}",
                    status,
                )
            url = urllib.parse.urljoin(url, location)
            if url.split("?", 1)[0] == redirect_uri.split("?", 1)[0]:
                return url
            target = urllib.parse.urlsplit(url)
            if target.path.startswith("/interaction/"):
                url = f"{url}{'&' if target.query else '?'}login={urllib.parse.quote(user)}"
        raise OidcError("unexpected_response", f"too many redirects, last {url}")

    def sign_in(
        self,
        client_id: str,
        user: str,
        redirect_uri: str = REDIRECT_URI,
        code_verifier: str | None = None,
        nonce: str | None = None,
        state: str | None = None,
        scope: str = DEFAULT_SCOPE,
        *,
        resource: str | None = None,
    ) -> str:
        """Sign `user` in to `client_id` as a browser would (see follow); returns the code.

        Without a code_verifier the request carries no PKCE challenge. Raises OidcError
        when the redirect back carries an error, or a wrong state or iss.
        """
        state = state or secrets.token_urlsafe(16)
        challenge = None
        if code_verifier is not None:
            digest = hashlib.sha256(code_verifier.encode("ascii")).digest()
            challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
        url = self.authorize_url(
            client_id,
            redirect_uri,
            challenge,
            state=state,
            nonce=nonce,
            scope=scope,
            resource=resource,
        )
        back = self.follow(url, user, redirect_uri)
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(back).query))
        if "error" in query:
            raise OidcError(query["error"], query.get("error_description", ""))
        if query.get("iss") != self.issuer:
            raise OidcError("invalid_response", f"iss {query.get('iss')!r}")
        if query.get("state") != state:
            raise OidcError("invalid_response", f"state {query.get('state')!r}")
        return query["code"]

    def token_request(
        self, form: dict[str, str], client_id: str, client_secret: str | None = None
    ) -> dict[str, Any]:
        """POST to the token endpoint: client_secret_basic with a secret, else client_id in
        the form (public client). Raises OidcError on an error answer."""
        headers = {}
        if client_secret is None:
            form = {**form, "client_id": client_id}
        else:
            pair = f"{urllib.parse.quote(client_id)}:{urllib.parse.quote(client_secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        result: dict[str, Any] = self._json("POST", self.discovery["token_endpoint"], form, headers)
        return result

    def tokens(
        self,
        code: str,
        client_id: str,
        redirect_uri: str = REDIRECT_URI,
        code_verifier: str | None = None,
        client_secret: str | None = None,
        resource: str | None = None,
    ) -> dict[str, Any]:
        """The token endpoint's answer for an authorization code: id_token, access_token…"""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if code_verifier is not None:
            form["code_verifier"] = code_verifier
        if resource is not None:
            form["resource"] = resource
        return self.token_request(form, client_id, client_secret)

    def refresh(
        self,
        refresh_token: str,
        client_id: str,
        client_secret: str | None = None,
        resource: str | None = None,
    ) -> dict[str, Any]:
        """The token endpoint's answer for a refresh token."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if resource is not None:
            form["resource"] = resource
        return self.token_request(form, client_id, client_secret)

    def tokens_for(
        self,
        user: str,
        client_id: str = WEB_CLIENT,
        *,
        client_secret: str | None = None,
        scope: str = DEFAULT_SCOPE,
        resource: str | None = None,
        nonce: str | None = None,
    ) -> dict[str, Any]:
        """Sign `user` in with PKCE and redeem the code: the token endpoint's answer."""
        verifier, _ = pkce_pair()
        code = self.sign_in(
            client_id,
            user,
            REDIRECT_URI,
            verifier,
            nonce or secrets.token_urlsafe(16),
            scope=scope,
            resource=resource,
        )
        return self.tokens(code, client_id, REDIRECT_URI, verifier, client_secret)


@pytest.fixture(scope="session")
def oidc_provider() -> Iterator[OidcProvider]:
    """An oidc-provider with the default clients and users, for the test session."""
    provider = OidcProvider()
    provider.start()
    try:
        yield provider
    finally:
        provider.stop()
