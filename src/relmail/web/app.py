"""``relmail serve``: the WSGI app for unsubscribe links, preferences and ESP webhooks.

Routes:

- ``GET|HEAD /unsubscribe/<token>``: a confirmation page; it never changes
  anything (mail scanners and link previewers fetch links, often with
  HEAD, before people do);
- ``POST /unsubscribe/<token>``: the RFC 8058 one-click POST (body
  ``List-Unsubscribe=One-Click``) leaves the token's topic at once; the
  confirmation page's own form (``confirm=unsubscribe`` and a ``scope`` of
  ``topic`` or ``all``) leaves what the person chose; any other POST changes
  nothing and answers 400 saying why;
- ``GET|HEAD|POST /preferences/<token>``: the topics the campaigns use, the
  global switch and a weekly limit; only the page's own form is saved;
- the links of a preview or a proof (``relmail preview``, ``relmail send
  --test-to``) show the same pages but change nothing: whoever tests them is
  not the customer whose data the e-mail shows;
- ``POST /webhooks/<provider>`` (and ``/webhooks/<provider>/<secret>`` for postmark, brevo and mailjet): ESP events;
- ``HEAD /webhooks/mandrill``: 200, Mandrill's check of a new webhook's URL;
- ``GET /healthz``.

Pages are in the customer's language, branded and overridable
(:mod:`relmail.web.pages`). Built on werkzeug (Pallets' WSGI toolkit, which
Flask sits on): its request parsing, routing and test client are maintained
and handle HTTP's edge cases; a whole framework would add nothing here. Any
WSGI server runs it: ``gunicorn 'relmail.web:create_app()'`` with
``RELMAIL_PROJECT`` set.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.engine import Engine
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from .. import tokens
from ..errors import ConfigError, DatabaseError, SignatureError, ValidationError
from ..feedback import PROVIDERS, URL_CREDENTIALS, ingest, provider, webhook_unready
from ..feedback.apply import ALL_TOPICS
from ..feedback.consent import preference_state, topic_defaults, unsubscribe, update_preferences
from ..feedback.webhook import MissingCredentials, ProviderUnreachable, WebhookConfig, WebhookRequest
from ..project import Project
from ..store import link_projects
from ..store.db import connect
from ..store.models import Customer
from .pages import Pages

log = logging.getLogger("relmail.web")

#: Webhook bodies larger than this are refused (SendGrid batches stay far below).
MAX_BODY = 10 * 1024 * 1024

_HEADERS = {
    # The token in the URL must not leak to other sites through Referer, and
    # the one-click button must not be framed by another page (clickjacking).
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


#: The first step of every route's path: what may follow the base URL's path.
_ROUTES = frozenset({"healthz", "unsubscribe", "preferences", "webhooks"})


class RelmailApp:
    """The WSGI callable. Build it with :func:`make_app`."""

    def __init__(self, project: Project, engine: Engine, webhook_config: WebhookConfig | None = None):
        self.project = project
        self.engine = engine
        self.webhooks = webhook_config or WebhookConfig.from_project(project)
        self.pages = Pages(project)
        # The path of [unsubscribe] base_url (/relmail in a new project): the links' own path, answered as well
        # as the routes at the root, so a proxy that passes https://shop.example/relmail/... on unchanged works.
        self.mount = urlsplit(project.settings.unsubscribe_url).path.rstrip("/")
        self.url_map = Map(
            [
                # werkzeug answers HEAD through a GET rule; the handlers treat it as a GET.
                Rule("/healthz", endpoint="health", methods=["GET"]),
                # <path:...>: a link a mail program or a reader extended with a '/' (or a sentence's '.') still works.
                Rule("/unsubscribe/<path:token>", endpoint="unsubscribe", methods=["GET", "POST"]),
                Rule("/preferences/<path:token>", endpoint="preferences", methods=["GET", "POST"]),
                # A link cut off before its token: the page that says so, in the reader's language, not a bare 404.
                Rule("/unsubscribe/", endpoint="no_token", methods=["GET", "POST"]),
                Rule("/preferences/", endpoint="no_token", methods=["GET", "POST"]),
                Rule("/webhooks/<provider_name>", endpoint="webhook", methods=["POST"]),
                Rule("/webhooks/<provider_name>", endpoint="webhook_check", methods=["HEAD"]),
                Rule("/webhooks/<provider_name>/<secret>", endpoint="webhook", methods=["POST"]),
            ],
            # No redirect to add a '/': its Location would be built from what the app sees, which behind a
            # proxy that strips base_url's path lacks it (and says http): the page is answered where asked.
            strict_slashes=False,
        )

    # -- plumbing ---------------------------------------------------------

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if self.mount and path.startswith(self.mount + "/") and path[len(self.mount):].split("/")[1] in _ROUTES:
            environ = {**environ, "SCRIPT_NAME": environ.get("SCRIPT_NAME", "") + self.mount, "PATH_INFO": path[len(self.mount):]}
        request = Request(environ)
        request.max_content_length = MAX_BODY
        adapter = self.url_map.bind_to_environ(environ)
        try:
            endpoint, args = adapter.match()
            response = getattr(self, f"on_{endpoint}")(request, **args)
        except HTTPException as exc:
            response = exc.get_response(environ)
        except (ConfigError, DatabaseError) as exc:
            log.error("%s %s unavailable: %s", request.method, request.path.split("/")[1], exc)
            response = self.page("unavailable.html", self.pages.best_match(request.accept_languages), 503)
        return response(environ, start_response)

    def page(self, name: str, lang: str, status: int = 200, **context) -> Response:
        return Response(self.pages.render(name, lang, **context), status=status, mimetype="text/html", headers=_HEADERS)

    def claims(self, token: str) -> tokens.Claims:
        with self.engine.connect() as conn:
            names = link_projects.accepted(conn, self.project.settings.name)
        return tokens.verify(self.project.secret("signing_key"), clean_token(token), names)

    def on_no_token(self, request: Request) -> Response:
        return self.bad_link(request)

    def bad_link(self, request: Request) -> Response:
        # Plain, and the same for every kind of bad token: no oracle.
        return self.page("invalid.html", self.pages.best_match(request.accept_languages), 400)

    def language_of(self, customer_id: str) -> str:
        """The page language for a customer: their locale's, or the project's for someone not (or no longer) stored."""
        table = Customer.__table__
        with self.engine.connect() as conn:
            locale = conn.execute(select(table.c.locale).where(table.c.id == customer_id)).scalar_one_or_none()
        return self.pages.language(locale)

    # -- pages ------------------------------------------------------------

    def on_health(self, request: Request) -> Response:
        return Response("ok\n", mimetype="text/plain")

    def on_unsubscribe(self, request: Request, token: str) -> Response:
        try:
            claims = self.claims(token)
        except SignatureError:
            return self.bad_link(request)
        lang = self.language_of(claims.customer_id)
        everything = claims.topic in ("", ALL_TOPICS)
        topic = None if everything else self.pages.topic(claims.topic, lang)
        context = {"topic": topic, "preferences_url": preferences_url(token)}
        if request.method in ("GET", "HEAD"):
            return self.page("unsubscribe.html", lang, **context)
        form = request.form
        one_click = form.get("List-Unsubscribe") == "One-Click" or _plain_one_click(request)
        if one_click:
            # RFC 8058: the mail program's button leaves the list the message came from, at once.
            scope = "all" if everything else "topic"
        elif form.get("confirm") == "unsubscribe" and form.get("scope") in ("topic", "all"):
            scope = "all" if everything else form["scope"]
        else:
            return self.page("refused.html", lang, 400, reason="not-one-click", **context)
        if claims.trial:
            # A proof's or preview's link, clicked by whoever tests it: the customer keeps her choice.
            return self.page("refused.html", lang, reason="trial", **context)
        result = unsubscribe(self.engine, claims, everything=scope == "all", one_click=one_click)
        log.info("unsubscribe customer=%s scope=%s new=%s", claims.customer_id, "all" if scope == "all" else claims.topic,
                 result.total_applied)
        return self.page("unsubscribed.html", lang, **{**context, "topic": topic if scope == "topic" else None})

    def on_preferences(self, request: Request, token: str) -> Response:
        try:
            claims = self.claims(token)
        except SignatureError:
            return self.bad_link(request)
        lang = self.language_of(claims.customer_id)
        defaults = topic_defaults(self.project)
        topics = self.pages.topics(defaults, lang)
        labels = {t.slug: t.label for t in topics}
        changes, saved, error, status = [], False, False, 200
        if request.method == "POST":
            form = request.form
            raw = form.get("max_per_week", "").strip()
            if form.get("form") != "preferences":
                return self.page("refused.html", lang, 400, reason="not-the-form", preferences_url=preferences_url(token))
            if claims.trial:
                return self.page("refused.html", lang, reason="trial", preferences_url=preferences_url(token))
            if raw and not (raw.isdigit() and 1 <= int(raw) <= 50):
                error, status = True, 400
            else:
                changes = update_preferences(
                    self.engine, claims, subscribed=set(form.getlist("topic")),
                    unsubscribe_all=form.get("unsubscribe_all") == "1",
                    max_per_week=int(raw) if raw else None, topics=defaults, defaults=defaults,
                    consent=self.project.settings.consent,
                )
                # As for an unsubscribe: the operator's log says what a page changed (a re-subscription too), by id only.
                log.info("preferences customer=%s changed=%s", claims.customer_id,
                         ", ".join(str(c) for c in changes) or "nothing")
                saved = True
        state = preference_state(self.engine, claims.customer_id, defaults, defaults, self.project.settings.consent)
        return self.page("preferences.html", lang, status, topics=topics, labels=labels, state=state, changes=changes,
                         saved=saved, error=error)

    # -- webhooks ---------------------------------------------------------

    def on_webhook_check(self, request: Request, provider_name: str) -> Response:
        """The HEAD a provider sends to check a new webhook's URL (Mandrill): 200, nothing else happens."""
        if provider_name not in PROVIDERS:
            raise NotFound()
        if not provider(provider_name, project=self.project).answers_head:
            raise MethodNotAllowed(["POST"])
        return Response(status=200)

    def on_webhook(self, request: Request, provider_name: str, secret: str | None = None) -> Response:
        if provider_name not in PROVIDERS or (secret is not None and provider_name not in URL_CREDENTIALS):
            raise NotFound()
        auth = request.authorization
        hook = WebhookRequest(
            body=request.get_data(cache=False),
            headers=request.headers,
            auth=(auth.username or "", auth.password or "") if auth and auth.type == "basic" else None,
            path_secret=secret,
        )
        try:
            batch = provider(provider_name, project=self.project).receive(hook, self.webhooks)
            result = ingest(self.engine, batch)
        except MissingCredentials as exc:
            # Logged like every refusal: a provider set up without the signature or the URL's
            # credentials is refused on every event, and only the log tells the operator.
            log.warning("webhook %s refused: %s", provider_name, exc)
            headers = {"WWW-Authenticate": 'Basic realm="relmail"'} if provider_name in URL_CREDENTIALS else {}
            return _json({"error": str(exc)}, 401, headers)
        except SignatureError as exc:
            log.warning("webhook %s refused: %s", provider_name, exc)
            return _json({"error": str(exc)}, 403)
        except ValidationError as exc:
            # A body-level problem names the shape, never the body's content (no addresses in the log).
            problem = "; ".join(str(p) for p in exc.problems) or str(exc)
            log.warning("webhook %s refused: %s", provider_name, problem)
            return _json({"error": problem, "problems": [p.as_dict() for p in exc.problems]}, 400)
        except (ConfigError, DatabaseError, ProviderUnreachable) as exc:
            # 503 makes the provider retry later, after the fix.
            log.error("webhook %s unavailable: %s", provider_name, exc)
            return _json({"error": str(exc)}, 503)
        if result.invalid:
            # Still 200: the valid events are applied and the invalid ones
            # recorded; a non-2xx answer would make the provider send the
            # whole body again, and the invalid events would never improve.
            log.warning("webhook %s: %d invalid event(s) recorded: %s", provider_name, len(result.invalid),
                        "; ".join(f"{bad.where}: {bad.field or '-'}: {bad.reason}" for bad in result.invalid[:5]))
        return _json(result.as_dict(), 200)


#: What a plain-text mail program's link detection, or a reader copying the link, adds after a token: the
#: closing bracket of "[Abmelden](https://.../TOKEN)", a sentence's full stop, a slash. Tokens
#: (payload.signature in base64url) never end in one, and the signature is verified all the same.
_TRAILING = "/.,;:!?)]}>'\"\u201d\u2019 \t\r\n"


def clean_token(token: str) -> str:
    """``token`` without what a mail program or a reader added after it."""
    return token.strip().rstrip(_TRAILING)


def preferences_url(token: str) -> str:
    """The preference page's link from a page at ``.../unsubscribe/<token>`` (relative, so it works under any prefix).

    A ``/`` a mail program added after the token is one folder more to climb.
    """
    return "../" * (1 + token.count("/")) + f"preferences/{clean_token(token)}"


def _json(obj: dict, status: int, headers: dict | None = None) -> Response:
    return Response(json.dumps(obj), status=status, mimetype="application/json", headers=headers or {})


def make_app(project: Project, engine: Engine, webhook_config: WebhookConfig | None = None) -> RelmailApp:
    """The WSGI app for ``project`` on ``engine``."""
    return RelmailApp(project, engine, webhook_config)


def create_app() -> RelmailApp:
    """Zero-argument factory for WSGI servers: the project from ``$RELMAIL_PROJECT`` (or the cwd)."""
    project = Project.load()
    if unready := webhook_unready(project):
        log.warning("%s", unready)
    return make_app(project, connect(project.database_url))


def _plain_one_click(request: Request) -> bool:
    """RFC 8058's body sent without a form's Content-Type (none, or text/plain), as some senders of the POST do.

    The body is still exactly ``List-Unsubscribe=One-Click``, which no link scanner or
    prefetcher sends; refusing it would leave a customer who pressed the button subscribed.
    """
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return False
    return request.get_data(cache=True).strip() == b"List-Unsubscribe=One-Click"
