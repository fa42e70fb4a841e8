"""The dashboard as a Starlette app: the runs table, a run's page and its timeline,
and the actions, each a POST; the guards every request passes are in ``_guard``.

Pages are Jinja2 templates that escape every value; the script and the style
are files of this package served by the app itself, so a page asks nothing
of the network. The store is read through a read-only connection (see
`create_app`); only `Actions` writes, when a person asks for it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import os
import re
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp

from .._errors import ResumeError, StoreError
from ..cli._store import resume_command
from ..durable._history import BUDGET_KEY
from ..stores._base import Store
from ._actions import ActionError, Actions
from ._guard import Guard
from ._listing import STATUSES, RunIndex, inside, when
from ._look import EVENTS_PAGE, RunView, events_page, prompt_lines, version_of

__all__ = ["create_app"]

_HERE = Path(__file__).parent
_LARGEST_FORM = 16 << 20  # bytes: shared of up to a million characters, URL-encoded
_DOTS = (".", "..")  # run ids a browser would take out of a path (see _segment)
_ESCAPED_DOTS = ("!.", "!..")  # their segments
# autoescape: every value a page shows is escaped, whatever shared holds.
_TEMPLATES = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_HERE / "templates")), autoescape=True
    )
)
_TEMPLATES.env.filters["when"] = when
_TEMPLATES.env.filters["number"] = lambda value: f"{value:,}"
_TEMPLATES.env.filters["prompt_lines"] = prompt_lines
_TEMPLATES.env.filters["segment"] = lambda run_id: _segment(str(run_id))


def create_app(
    store: Store,
    location: str | os.PathLike[str],
    *,
    target: str | None = None,
    token: str | None = None,
    hosts: tuple[str, ...] | None = ("127.0.0.1", "localhost", "::1"),
) -> ASGIApp:
    """The dashboard of the runs of ``store``, as an ASGI app.

    Args:
        store: The store to read: give one that only reads
            (``SQLiteStore(path, read_only=True)``, ``PostgresStore(url,
            read_only=True)``), so that looking changes nothing and never
            waits for a run that writes.
        location: Where it is, a SQLite file's path or a ``postgresql://``
            URL: actions open it to write, and the pages name it (a URL's
            password replaced by ``PASSWORD``) and the commands they suggest.
        target: The flow's TARGET for actions on runs that remember none.
        token: Required of every request (``?token=``, once: a cookie keeps
            it), or ``None`` for none.
        hosts: The names the page may be asked for by (``Host``), against
            DNS rebinding; ``None`` for any (a token guards it then).
    """
    actions = Actions(location, target, getattr(store, "serializer", "json"))
    shown = str(actions.address)
    index = RunIndex(store)
    csrf = secrets.token_urlsafe(32)
    timeline_policy = _timeline_policy()

    def page(request: Request, name: str, code: int = 200, /, **context: Any) -> Response:
        context.update(csrf=csrf, store_path=shown, statuses=STATUSES)
        return _TEMPLATES.TemplateResponse(request, name, context, status_code=code)

    def runs_page(request: Request) -> Response:
        status = request.query_params.get("status") or None
        if status not in (None, *STATUSES):
            status = None
        search = request.query_params.get("q", "")[:200]
        listing = index.page(status, search, _number(request.query_params.get("page"), 1))
        return page(request, "runs.html", listing=listing, status=status or "", search=search)

    def read_run(run_id: str) -> RunView:
        return RunView(store, run_id)

    def run_shown(request: Request, run_id: str, said: str, status: int) -> Response:
        """The run's page (``said``: what refused an action on it); if the run
        cannot be read (gone, or data this dashboard may not decode: a pickle
        run where it reads JSON), a page that says why."""
        try:
            return _show_run(request, read_run(run_id), page, actions, said, status)
        except (StoreError, ResumeError) as error:
            try:
                store.get(run_id)
            except StoreError:
                return page(request, "missing.html", 404, run_id=run_id, said=str(error))
            # The run is there; its data cannot be read here.
            return page(request, "unreadable.html", 409, run_id=run_id, said=str(error))

    async def run_page(request: Request) -> Response:
        run_id = _whole_id(request) or _route_id(request)
        return await run_in_threadpool(run_shown, request, run_id, "", 200)

    async def version(request: Request) -> Response:
        if _whole_id(request) is not None:  # a run whose id ends in /version
            return await run_page(request)
        run_id = _route_id(request)
        try:
            record = await run_in_threadpool(store.get, run_id)
        except StoreError:
            return JSONResponse({"version": None}, status_code=404)
        return JSONResponse({"version": version_of(record), "status": record.status})

    async def timeline(request: Request) -> Response:
        if _whole_id(request) is not None:  # a run whose id ends in /timeline
            return await run_page(request)
        run_id = _route_id(request)
        try:
            await run_in_threadpool(store.get, run_id)
        except StoreError as error:
            return page(request, "missing.html", 404, run_id=run_id, said=str(error))
        text = await run_in_threadpool(_timeline_page, store, run_id)
        if text is None:
            return HTMLResponse(
                "<!DOCTYPE html><title>no timeline</title><p>No events were recorded for this "
                "run: runs started or resumed by the braidflow command keep them, as do runs "
                "given record_events=True.</p>",
                headers={"Content-Security-Policy": "default-src 'none'"},
            )
        return HTMLResponse(text, headers={"Content-Security-Policy": timeline_policy})

    async def action_by_get(request: Request) -> Response:
        run_id, action = _route_id(request), request.path_params["action"]
        if _whole_id(request) is not None or action not in ("resume", "fork", "drain"):
            # a run id with a slash in it (encoded, as the pages link it, or not)
            request.path_params["run_id"] = f"{run_id}/{action}"
            return await run_page(request)
        return HTMLResponse(
            f"<!DOCTYPE html><title>{action}: use the run's page</title><p>To {action} run "
            f'{html.escape(run_id)!s}, use the button on <a href="/runs/{_segment(run_id)}">its '
            "page</a>: an action is a form sent from there (POST), never a link.</p>",
            status_code=405,
            headers={"Allow": "POST", "Content-Security-Policy": "default-src 'none'"},
        )

    async def act_on_run(request: Request, form: Any, act: Callable[[Any], Any]) -> Response:
        """An action on a run (``act(record)``), the form's token checked: the
        run's page again, or what refused it."""
        run_id = _route_id(request)
        if not _csrf_ok(form.get("csrf"), csrf):
            return _refused()
        try:
            record = await run_in_threadpool(store.get, run_id)
            await run_in_threadpool(act, record)
        except StoreError as error:
            return page(request, "missing.html", 404, run_id=run_id, said=str(error))
        except ActionError as error:
            return await run_in_threadpool(run_shown, request, run_id, str(error), 400)
        return RedirectResponse(f"/runs/{_segment(run_id)}", status_code=303)

    async def resume(request: Request) -> Response:
        form = await _form(request)
        if form is None:
            return _too_large()
        answer = form.get("answer")
        answers = {
            name.removeprefix("answer-"): text
            for name, text in form.items()
            if name.startswith("answer-") and text.strip()
        }
        return await act_on_run(
            request, form, lambda record: actions.resume(record, answer, answers)
        )

    async def drain(request: Request) -> Response:
        form = await _form(request)
        if form is None:
            return _too_large()
        return await act_on_run(request, form, actions.drain)

    async def fork(request: Request) -> Response:
        form = await _form(request)
        if form is None:
            return _too_large()
        run_id = _route_id(request)
        if not _csrf_ok(form.get("csrf"), csrf):
            return _refused()
        given = form.get("at")
        at = _number(given, None)
        edited = form.get("shared")
        try:
            view = await run_in_threadpool(read_run, run_id)
        except (StoreError, ResumeError) as error:
            return page(request, "missing.html", 404, run_id=run_id, said=str(error))
        if at is None:  # (the page's form always sends one; a request made by hand)
            said = f"the step to fork at must be a step's number, not {given!r}"
            return await run_in_threadpool(_show_run, request, view, page, actions, said, 400)
        try:
            before = await run_in_threadpool(view.run.state, at)
            new = await run_in_threadpool(
                actions.fork, view.record, at, before, edited if isinstance(edited, str) else ""
            )
        except (ResumeError, ActionError) as error:  # no such step; the fork refused
            return await run_in_threadpool(_show_run, request, view, page, actions, str(error), 400)
        return RedirectResponse(f"/runs/{_segment(new)}", status_code=303)

    routes = [
        Route("/", runs_page),
        Route("/runs/{run_id:path}/version", version),
        Route("/runs/{run_id:path}/timeline", timeline),
        Route("/runs/{run_id:path}/resume", resume, methods=["POST"]),
        Route("/runs/{run_id:path}/fork", fork, methods=["POST"]),
        Route("/runs/{run_id:path}/drain", drain, methods=["POST"]),
        # An action asked for by GET (a link followed, a URL typed): said so.
        Route("/runs/{run_id:path}/{action:str}", action_by_get, methods=["GET"]),
        Route("/runs/{run_id:path}", run_page),
        Mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        actions.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.actions = actions
    return Guard(app, token=token, hosts=hosts)


def _show_run(
    request: Request,
    view: RunView,
    page: Callable[..., Response],
    actions: Actions,
    said: str,
    status: int = 200,
) -> Response:
    """The page of a run (``said``: why an action was refused)."""
    params = request.query_params
    record = view.record
    at = _number(params.get("at"), view.last_finished)
    if not view.finished(at):
        said = said or view.why_no_state(at)
        at = view.last_finished
    state = view.state(at)
    target = actions.target_of(record)
    events = events_page(
        view.store, record.run_id, _number(params.get("offset"), 0), params.get("kind", "")[:40]
    )
    return page(
        request,
        "run.html",
        status,
        view=view,
        record=record,
        steps=view.steps(),
        state=state,
        events=events,
        events_page=EVENTS_PAGE,
        target=target,
        busy=actions.busy(record.run_id),
        resume_instead=actions.instead(record, "resume") if target is None else "",
        budget_instead=resume_command(record, actions.address)
        if record.status == "waiting" and record.metadata.get(BUDGET_KEY)
        else "",
        fork_instead=actions.instead(record, "fork", at) if target is None else "",
        said=said,
        notes=view.notes(),
        ended_at=inside(record.node or "", record.flow),
        questions=record.questions,
        usage=record.spent,
        quoted=_segment(record.run_id),
    )


def _timeline_page(store: Store, run_id: str) -> str | None:
    from ..durable._recorder import recorded_events
    from ..tracing._timeline import render, timeline_data

    try:
        events = recorded_events(store, run_id)
        if not events:
            return None
        data = timeline_data(events)
    except (StoreError, ValueError):
        return None
    return render(data, f"run {run_id} of {data['run']['name']}")


def _timeline_policy() -> str:
    """What the timeline page may do: run its own script (by its hash) and
    nothing else; its style is inline."""
    from importlib import resources

    page = resources.files("braidflow.tracing").joinpath("timeline.html").read_text("utf-8")
    hashes = []
    for script in re.findall(r"<script>(.*?)</script>", page, flags=re.S):
        digest = hashlib.sha256(script.encode()).digest()
        hashes.append(f"'sha256-{base64.b64encode(digest).decode()}'")
    return (
        f"default-src 'none'; script-src {' '.join(hashes)}; style-src 'unsafe-inline'; "
        "img-src data:; frame-ancestors 'self'"
    )


async def _form(request: Request) -> dict[str, str] | None:
    """The fields of a form the page posted (url-encoded, as the pages send
    them; no multipart parser needed); ``None`` for one too large to read."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _LARGEST_FORM:
            return None
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


T = TypeVar("T")


def _number(text: Any, default: T) -> int | T:
    try:
        return int(text) if isinstance(text, str) else default
    except ValueError:
        return default


def _segment(run_id: str) -> str:
    """A run id as one segment of a URL's path, which a browser keeps as it is
    and `_whole_id` and `_route_id` read back: every character but a letter,
    a digit or ``-._~`` percent-encoded, a slash too; and the ids ``.`` and
    ``..`` written ``!.`` and ``!..``. A browser takes those two out of a path
    as "this folder" and "the one above" (as ``%2E`` and ``%2E%2E`` too), and
    the ``!`` of an id is always encoded (``%21``), so no other id reads so."""
    quoted = quote(run_id, safe="")
    return f"!{quoted}" if quoted in _DOTS else quoted


def _csrf_ok(given: Any, expected: str) -> bool:
    return isinstance(given, str) and secrets.compare_digest(given, expected)


def _whole_id(request: Request) -> str | None:
    """The run id of a run page's address whose every slash is encoded
    (``/runs/x%2Fresume``, as the pages link ``x/resume``): the address names
    that run, whatever its id ends with; ``None`` for any other address."""
    rest = _raw_rest(request)
    if not rest or "/" in rest:
        return None
    return rest[1:] if rest in _ESCAPED_DOTS else unquote(rest)


def _route_id(request: Request) -> str:
    """The run id the route read from an address with a part after it
    (``/runs/ID/resume``), its ``!.`` or ``!..`` read back (`_segment`)."""
    run_id: str = request.path_params["run_id"]
    if run_id in _ESCAPED_DOTS and _raw_rest(request).startswith("!"):  # not %21
        return run_id[1:]
    return run_id


def _raw_rest(request: Request) -> str:
    """The address after ``/runs/`` as the browser sent it, nothing decoded
    (``""`` for any other address)."""
    raw = (request.scope.get("raw_path") or b"").decode("latin-1")
    rest = raw.removeprefix("/runs/")
    return "" if rest == raw else rest


def _too_large() -> Response:
    return HTMLResponse(
        "<!DOCTYPE html><title>too large</title><p>This form is larger than the dashboard "
        f"takes ({_LARGEST_FORM >> 20} MB): make shared smaller, or fork from Python "
        "(flow.fork(run_id, at=..., update=...)) or with braidflow fork --set KEY=JSON.</p>",
        status_code=413,
    )


def _refused() -> Response:
    return HTMLResponse(
        "<!DOCTYPE html><title>refused</title><p>This form is out of date (or was not sent "
        "by the dashboard): go back, reload the page and try again.</p>",
        status_code=403,
    )
