"""The dashboard of stored runs (``braidflow ui``): a local web app that lists a
store's runs, shows one (its timeline, steps, shared, events, error) and acts on it.

It needs the ``braidflow[ui]`` extra (Starlette, uvicorn, Jinja2);
``import braidflow`` never imports this package. ``create_app`` gives the
app, to serve with any ASGI server; the command serves it with uvicorn.
"""

from __future__ import annotations

from ._app import create_app as create_app

__all__ = ["create_app"]
