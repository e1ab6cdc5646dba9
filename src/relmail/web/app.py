"""``relmail serve``: the WSGI app for unsubscribe links, preferences and ESP webhooks.

Routes:

- ``GET  /unsubscribe/<token>``: a confirmation page (a GET never changes
  anything: mail scanners fetch links before people do);
- ``POST /unsubscribe/<token>``: RFC 8058 one-click (body
  ``List-Unsubscribe=One-Click``) leaves the token's topic; the page's
  buttons leave the topic or everything;
- ``GET|POST /preferences/<token>``: topics, the global switch, a frequency wish;
- ``POST /webhooks/<provider>`` (and ``/webhooks/postmark/<secret>``): ESP events;
- ``GET /healthz``.

Built on werkzeug (Pallets' WSGI toolkit, which Flask sits on): its request
parsing, routing and test client are maintained and handle HTTP's edge
cases; a whole framework would add nothing here. Any WSGI server runs it:
``gunicorn 'relmail.web:create_app()'`` with ``RELMAIL_PROJECT`` set.
"""

from __future__ import annotations

import json
import logging
import re

from jinja2 import DictLoader, Environment, select_autoescape
from sqlalchemy.engine import Engine
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from .. import tokens
from ..errors import ConfigError, DatabaseError, SignatureError, ValidationError
from ..feedback import PROVIDERS, ingest, provider
from ..feedback.consent import campaign_topics, preference_state, unsubscribe, update_preferences
from ..feedback.webhook import MissingCredentials, WebhookConfig, WebhookRequest
from ..project import Project
from ..store.db import connect

log = logging.getLogger("relmail.web")

#: Webhook bodies larger than this are refused (SendGrid batches stay far below).
MAX_BODY = 10 * 1024 * 1024

_HEADERS = {
    # The token in the URL must not leak to other sites through Referer, and
    # the one-click button must not be framed by another page (clickjacking).
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}

_PAGES = {
    "base.html": """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }} · {{ brand }}</title>
<style>body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;color:#222;line-height:1.5}
h1{font-size:1.4rem;color:{{ color }}}button{background:{{ color }};color:#fff;border:0;padding:.6rem 1rem;border-radius:4px;
font-size:1rem;cursor:pointer;margin:.2rem 0}button.secondary{background:#666}fieldset{border:1px solid #ddd;border-radius:4px}
label{display:block;margin:.3rem 0}.note{color:#555;font-size:.9rem}</style></head>
<body><h1>{{ title }}</h1>{% block body %}{% endblock %}<p class="note">{{ brand }}</p></body></html>""",
    "message.html": """{% extends "base.html" %}{% block body %}<p>{{ message }}</p>
{% if pref_url %}<p><a href="{{ pref_url }}">Manage your e-mail preferences</a></p>{% endif %}{% endblock %}""",
    "confirm.html": """{% extends "base.html" %}{% block body %}
<p>Do you want to stop receiving <strong>{{ topic }}</strong> e-mails from {{ brand }}?</p>
<form method="post"><input type="hidden" name="scope" value="topic">
<button type="submit">Unsubscribe from {{ topic }}</button></form>
<form method="post"><input type="hidden" name="scope" value="all">
<button type="submit" class="secondary">Unsubscribe from all e-mails</button></form>
<p><a href="{{ pref_url }}">Or choose which e-mails you get</a></p>{% endblock %}""",
    "preferences.html": """{% extends "base.html" %}{% block body %}
{% if changes %}<p><strong>Saved.</strong> {{ changes|join(", ") }}</p>{% elif saved %}<p><strong>Saved.</strong> Nothing changed.</p>{% endif %}
<form method="post"><fieldset><legend>E-mails I want</legend>
{% for topic, on in state.topics.items() %}<label><input type="checkbox" name="topic" value="{{ topic }}"{% if on %} checked{% endif %}>
 {{ topic|replace("-", " ")|capitalize }}</label>
{% endfor %}</fieldset>
<label>At most <input type="number" name="max_per_week" min="1" max="50"
 value="{{ state.max_per_week if state.max_per_week is not none else '' }}" style="width:4rem"> e-mails a week (empty: no limit)</label>
<label><input type="checkbox" name="unsubscribe_all" value="1"{% if state.unsubscribed_all %} checked{% endif %}> Unsubscribe from all e-mails</label>
<button type="submit">Save</button></form>{% endblock %}""",
}

_ENV = Environment(loader=DictLoader(_PAGES), autoescape=select_autoescape(default=True, default_for_string=True))


class RelmailApp:
    """The WSGI callable. Build it with :func:`make_app`."""

    def __init__(self, project: Project, engine: Engine, webhook_config: WebhookConfig | None = None):
        self.project = project
        self.engine = engine
        self.webhooks = webhook_config or WebhookConfig.from_project(project)
        self.url_map = Map(
            [
                Rule("/healthz", endpoint="health", methods=["GET"]),
                Rule("/unsubscribe/<token>", endpoint="unsubscribe", methods=["GET", "POST"]),
                Rule("/preferences/<token>", endpoint="preferences", methods=["GET", "POST"]),
                Rule("/webhooks/<provider_name>", endpoint="webhook", methods=["POST"]),
                Rule("/webhooks/<provider_name>/<secret>", endpoint="webhook", methods=["POST"]),
            ]
        )
        brand = project.settings.brand
        self.brand = brand.name
        self.color = brand.color if re.fullmatch(r"#[0-9a-fA-F]{3,8}", brand.color or "") else "#1a73e8"

    # -- plumbing ---------------------------------------------------------

    def __call__(self, environ, start_response):
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
            response = self.page("message.html", 503, title="Temporarily unavailable",
                                 message="Please try again later. Nothing was changed.", pref_url=None)
        return response(environ, start_response)

    def page(self, name: str, status: int = 200, **context) -> Response:
        html = _ENV.get_template(name).render(brand=self.brand, color=self.color, **context)
        return Response(html, status=status, mimetype="text/html", headers=_HEADERS)

    def claims(self, token: str) -> tokens.Claims:
        return tokens.verify(self.project.secret("signing_key"), token)

    def bad_link(self) -> Response:
        # Plain, and the same for every kind of bad token: no oracle.
        return self.page("message.html", 400, title="Invalid link",
                         message="This link is invalid or has been altered. Nothing was changed.", pref_url=None)

    def topics(self) -> set[str]:
        return campaign_topics(self.project.campaigns_dir)

    # -- pages ------------------------------------------------------------

    def on_health(self, request: Request) -> Response:
        return Response("ok\n", mimetype="text/plain")

    def on_unsubscribe(self, request: Request, token: str) -> Response:
        try:
            claims = self.claims(token)
        except SignatureError:
            return self.bad_link()
        pref_url = f"../preferences/{token}"
        topic = claims.topic if claims.topic not in ("", "*") else "all"
        if request.method == "GET":
            return self.page("confirm.html", title="Unsubscribe", topic=topic, pref_url=pref_url)
        # RFC 8058: "List-Unsubscribe=One-Click" leaves the list the message
        # came from (the token's topic); the page's other button leaves all.
        everything = request.form.get("scope") == "all" or topic == "all"
        result = unsubscribe(self.engine, claims, everything=everything)
        log.info("unsubscribe customer=%s scope=%s new=%s", claims.customer_id, "all" if everything else topic,
                 result.total_applied)
        what = "all e-mails" if everything else f"{topic} e-mails"
        return self.page("message.html", title="You are unsubscribed",
                         message=f"You will no longer receive {what} from {self.brand}.", pref_url=pref_url)

    def on_preferences(self, request: Request, token: str) -> Response:
        try:
            claims = self.claims(token)
        except SignatureError:
            return self.bad_link()
        topics = self.topics()
        changes, saved = [], False
        if request.method == "POST":
            raw = request.form.get("max_per_week", "").strip()
            if raw and not (raw.isdigit() and 1 <= int(raw) <= 50):
                state = preference_state(self.engine, claims.customer_id, topics)
                return self.page("preferences.html", 400, title="Your e-mail preferences", state=state,
                                 changes=["the weekly limit must be a whole number from 1 to 50; nothing was saved"])
            changes = update_preferences(
                self.engine, claims, subscribed=set(request.form.getlist("topic")),
                unsubscribe_all=request.form.get("unsubscribe_all") == "1",
                max_per_week=int(raw) if raw else None, extra_topics=topics,
            )
            saved = True
        state = preference_state(self.engine, claims.customer_id, topics)
        return self.page("preferences.html", title="Your e-mail preferences", state=state, changes=changes, saved=saved)

    # -- webhooks ---------------------------------------------------------

    def on_webhook(self, request: Request, provider_name: str, secret: str | None = None) -> Response:
        if provider_name not in PROVIDERS or (secret is not None and provider_name != "postmark"):
            raise NotFound()
        auth = request.authorization
        hook = WebhookRequest(
            body=request.get_data(cache=False),
            headers=request.headers,
            auth=(auth.username or "", auth.password or "") if auth and auth.type == "basic" else None,
            path_secret=secret,
        )
        try:
            batch = provider(provider_name).receive(hook, self.webhooks)
            result = ingest(self.engine, batch)
        except MissingCredentials as exc:
            headers = {"WWW-Authenticate": 'Basic realm="relmail"'} if provider_name == "postmark" else {}
            return _json({"error": str(exc)}, 401, headers)
        except SignatureError as exc:
            log.warning("webhook %s refused: %s", provider_name, exc)
            return _json({"error": str(exc)}, 403)
        except ValidationError as exc:
            return _json({"error": str(exc), "problems": [p.as_dict() for p in exc.problems]}, 400)
        except (ConfigError, DatabaseError) as exc:
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


def _json(obj: dict, status: int, headers: dict | None = None) -> Response:
    return Response(json.dumps(obj), status=status, mimetype="application/json", headers=headers or {})


def make_app(project: Project, engine: Engine, webhook_config: WebhookConfig | None = None) -> RelmailApp:
    """The WSGI app for ``project`` on ``engine``."""
    return RelmailApp(project, engine, webhook_config)


def create_app() -> RelmailApp:
    """Zero-argument factory for WSGI servers: the project from ``$RELMAIL_PROJECT`` (or the cwd)."""
    project = Project.load()
    return make_app(project, connect(project.database_url))
