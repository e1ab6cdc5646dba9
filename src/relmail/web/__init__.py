"""``relmail serve``: the pages customers reach from an e-mail and the providers' webhooks."""

from .app import create_app, make_app

__all__ = ["create_app", "make_app"]
