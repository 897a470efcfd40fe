"""The metadata API on the lean HTTP layer (`openimds.leanhttp`): the default server.

    LeanServer (httptools protocol) ─┬► shortcut: answers kept as bytes (answers.py)
                                     └► handler ─► Responder.respond ─► response bytes

The handler is the same thin adapter as the aiohttp handler in `server.py`: it converts a
parsed request into a `MetadataRequest`, asks the `Responder` (the one place that decides
answers) and turns the `MetadataResponse` into bytes; status line and headers are kept per
(status, content type, length, extra headers), so a response is one concatenation and one
write(2).

An answer the Responder marks reusable (`respond.Reuse`) is also kept whole, as head and body
bytes, by (method, target, instance, tenant) in an `AnswerCache`. The shortcut answers the next
request with that key inside the parser callback, without a Request, a coroutine or the
Responder: it checks the raw identity headers, that the source still hands out the view the
answer was made from (the change feed replaces or drops it on any change that matters), the
date, and the signature against the one that made the answer (constant time); it splices a
fresh pooled `random_seed` into meta_data.json (`answers.SeedPool`); and it counts the request in the metrics and
the access log exactly as the handler would (both batched: no syscall per request). Whatever
it cannot answer goes to the handler.

`[DEFAULT] metadata_http_server = aiohttp` selects the aiohttp server instead (no shortcut).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta

from openimds.edge import edge_logger
from openimds.leanhttp import LeanServer, Replay, Request, Shortcut, status_head
from openimds.metadata.access import AccessLog
from openimds.metadata.answers import (
    Answer,
    AnswerCache,
    SeedPool,
    encoded_seeds,
    plain_identity,
)
from openimds.metadata.metrics import MetadataMetrics
from openimds.metadata.respond import (
    PASSWORD_MAX_BYTES,
    MetadataRequest,
    MetadataResponse,
    Responder,
)
from openimds.metadata.server import EntropyPool, _path_of, _utc_now
from openimds.metadata.view import InstanceView
from openimds.wire import INSTANCE_ID, INSTANCE_ID_SIGNATURE, TENANT_ID, sign_instance_id

__all__ = ["fast_metadata_server"]

_HTTP_LOG = edge_logger("openimds.metadata.http")
# Distinct heads seen; a bound so odd extra headers (token TTL echoes) cannot grow it forever.
_HEAD_CACHE_SIZE = 4096
_PATH_CACHE_SIZE = 4096
# Answers kept as bytes (about 0.5 KB each beside the documents the trees hold anyway):
# `[DEFAULT] metadata_answer_cache_size`.
ANSWER_CACHE_SIZE = 131072
_REUSABLE_METHODS = ("GET", "HEAD")
# Request targets whose answers were kept lately: what the next guests will ask too (a boot's
# client asks the same few dozen paths of every instance). Bounded: targets are guests' choice.
WARM_TARGETS = 256
# Answers rendered ahead per instance at most (learned targets and crawled listings' entries).
AHEAD_PER_INSTANCE = 512
# A learned target rendered ahead this many times in a row without a kept answer (another
# instance's own path, such as its MAC's directory) is no longer rendered ahead.
AHEAD_MISSES = 3


def _surrogate_bytes(text: str) -> bytes:
    # The exact inverse of the layer's decoding: the bytes as they came off the wire.
    return text.encode("utf-8", "surrogateescape")


def fast_metadata_server(
    responder: Responder,
    metrics: MetadataMetrics | None = None,
    *,
    clock: Callable[[], datetime] = _utc_now,
    entropy: Callable[[int], bytes] | None = None,
    access_log: AccessLog | None = None,
    idle_timeout: float = 75.0,
    request_timeout: float = 30.0,
    answer_cache_size: int = ANSWER_CACHE_SIZE,
) -> LeanServer:
    """The guest-facing server (start it with `start_tcp`, stop with `close`).

    `answer_cache_size` bounds the answers kept as bytes (0: none, every request goes to the
    Responder); they are kept only when the source offers `cached_view` (`CachedViews`)."""
    observe = metrics.observe if metrics is not None else None
    token_event = metrics.token_event if metrics is not None else None
    respond = responder.respond
    random_bytes = entropy or EntropyPool()
    log = access_log or AccessLog()
    perf_counter = time.perf_counter
    heads: dict[tuple[object, ...], bytes] = {}
    # Request target -> decoded path: guests ask for a few dozen distinct targets.
    paths: dict[str, str] = {}
    source = responder.source
    cached_view: Callable[[str], object] | None = getattr(source, "cached_view", None)
    answers = AnswerCache(answer_cache_size)
    if cached_view is not None and answer_cache_size > 0:
        source.add_forget_listener(answers.drop_instance)  # type: ignore[attr-defined]
    else:
        cached_view = None
    # Told of views loaded ahead of their guest's first request (store_source.py).
    add_prefetch_listener: Callable[[Callable[[InstanceView], Awaitable[None]]], None] | None = (
        getattr(source, "add_prefetch_listener", None) if cached_view is not None else None
    )

    # Raw GET targets of kept answers, most recent last (`prerender` renders these ahead),
    # and how many renders ahead in a row kept nothing for each.
    targets: OrderedDict[str, int] = OrderedDict()
    # Learned listings ("/" at the end) of which an entry was learned too: guests crawl them,
    # so an instance's own entries there (its MAC's directory) are rendered ahead as well.
    crawled: set[str] = set()

    def learn(target: str) -> None:
        if target in targets:
            targets[target] = 0
            targets.move_to_end(target)
            return
        targets[target] = 0
        at = target.find("/", 1)
        while 0 <= at < len(target) - 1:
            if target[: at + 1] in targets:
                crawled.add(target[: at + 1])
            at = target.find("/", at + 1)
        if target.endswith("/") and any(t != target and t.startswith(target) for t in targets):
            crawled.add(target)
        if len(targets) > WARM_TARGETS:
            gone, _ = targets.popitem(last=False)
            crawled.discard(gone)

    def keep(request: Request, resp: MetadataResponse, head: bytes) -> None:
        """Keep a reusable answer as bytes under the raw key of the request that got it."""
        reuse = resp.reuse
        assert reuse is not None and cached_view is not None
        if cached_view(reuse.view.uuid) is not reuse.view:
            return  # made from a view the source no longer hands out (or only its last one)
        if request.method == "GET":
            learn(request.target)
        identity = plain_identity(
            [(_surrogate_bytes(k), _surrogate_bytes(v)) for k, v in request.headers]
        )
        if identity is None:
            return
        instance, tenant, signature = identity
        seeded = reuse.seeded
        body, suffix = resp.body, None
        if seeded is not None and seeded.suffix is not None:
            body, suffix = seeded.prefix, seeded.suffix
        answers.put(
            (request.method, _surrogate_bytes(request.target), instance, tenant),
            Answer(
                view=reuse.view,
                today=reuse.today,
                # The request passed the signature check, so it carried the expected HMAC.
                signature=signature,
                head=head,
                body=body,
                suffix=suffix,
                status=resp.status,
                family=resp.family,
                fields=(request.method, request.target, resp.status, len(resp.body),
                        resp.instance_id or "-", resp.outcome),
            ),
        )

    async def handle(request: Request) -> tuple[bytes, bytes]:
        started = perf_counter()
        method = request.method
        target = request.target
        peer = request.peer
        path = paths.get(target)
        if path is None:
            path = _path_of(target)
            if len(paths) >= _PATH_CACHE_SIZE:
                paths.clear()
            paths[target] = path
        current = clock()
        resp = await respond(
            MetadataRequest(
                method=method,
                path=path,
                headers=request.headers,
                peer=peer,
                today=current.date(),
                random_bytes=random_bytes,
                body=request.body if method == "POST" else None,
                now=current.timestamp(),
            )
        )
        elapsed = perf_counter() - started
        if observe is not None:
            observe(resp.status, resp.family, elapsed)
        if token_event is not None and resp.token:
            token_event(resp.token, resp.instance_id)
        body = resp.body
        log(peer, method, target, resp.status, len(body), resp.instance_id, resp.outcome, elapsed)
        head = head_of(resp)
        if (resp.reuse is not None and cached_view is not None and resp.status == 200
                and method in _REUSABLE_METHODS):
            keep(request, resp, head)
        return head, body

    def head_of(resp: MetadataResponse) -> bytes:
        body = resp.body
        key = (resp.status, resp.content_type, len(body), resp.retry_after, resp.headers)
        head = heads.get(key)
        if head is None:
            extra = resp.headers
            if resp.retry_after is not None:
                extra = (("Retry-After", str(resp.retry_after)), *extra)
            head = status_head(resp.status, resp.content_type, len(body), extra)
            if len(heads) >= _HEAD_CACHE_SIZE:
                heads.clear()
            heads[key] = head
        return head

    identify_settings = responder.settings.identify

    async def prerender(view: InstanceView) -> None:
        """Render and keep `view`'s answers to the warm targets before its guest asks: the
        source calls this when it has loaded a view ahead of its first request (an instance
        the feed shows created or changed). The Responder decides each answer exactly as for
        a guest's request signed by the proxy (a refusal, a token rule or a 404 keeps
        nothing); `keep` checks the view is still current, and the shortcut checks it again
        on every use. Never evicts: nothing unless the learned targets all fit in the answer
        cache's room, and entries of crawled listings only while there is room."""
        responder.prepare(view, clock().date())
        if not targets or not identify_settings.service_metadata_proxy:
            return
        uuid = view.uuid
        raw_uuid, raw_project = _surrogate_bytes(uuid), _surrogate_bytes(view.project_id)
        wanted = [t for t in targets
                  if answers.get(("GET", _surrogate_bytes(t), raw_uuid, raw_project)) is None]
        if len(answers) + len(wanted) > answer_cache_size:
            return
        headers = ((INSTANCE_ID, uuid), (TENANT_ID, view.project_id),
                   (INSTANCE_ID_SIGNATURE, sign_instance_id(identify_settings.shared_secret,
                                                            uuid)))
        learned = len(wanted)
        queued = set(wanted)
        # A crawled listing's own entries that are listings are crawled too (whole subtrees).
        crawl = set(crawled)
        for done, target in enumerate(wanted):
            if done >= AHEAD_PER_INSTANCE or len(answers) >= answer_cache_size:
                return
            if cached_view is None or cached_view(uuid) is not view:
                return  # overtaken by a change: its own reload renders again
            path = paths.get(target) or _path_of(target)
            current = clock()
            resp = await respond(MetadataRequest(
                method="GET", path=path, headers=headers, peer=None, today=current.date(),
                random_bytes=random_bytes, now=current.timestamp(), ahead=True))
            kept = resp.reuse is not None and resp.status == 200
            if kept:
                keep(Request("GET", target, headers, None, None), resp, head_of(resp))
            if done < learned and target in targets:
                targets[target] = 0 if kept else targets[target] + 1
                if targets[target] >= AHEAD_MISSES:
                    del targets[target]
                    crawled.discard(target)
            if kept and target in crawl:
                for entry in _listing_entries(resp.body):
                    child = target + entry
                    if child not in queued and answers.get(
                            ("GET", _surrogate_bytes(child), raw_uuid, raw_project)) is None:
                        queued.add(child)
                        wanted.append(child)
                        if child.endswith("/"):
                            crawl.add(child)
            await asyncio.sleep(0)  # guests' requests go first

    if add_prefetch_listener is not None:
        add_prefetch_listener(prerender)
    shortcut: Shortcut | None = None
    replay: Replay | None = None
    if cached_view is not None:
        # The default pool makes seed texts without a base64 encoder; a given source is
        # encoded per response.
        seeds = SeedPool() if entropy is None else encoded_seeds(entropy)
        shortcut, replay = _shortcut(answers, cached_view, responder, metrics, clock, seeds, log)

    return LeanServer(
        handle,
        # Answers come from memory and finish without suspending: run them inside the parser
        # callback (eager). What suspends first runs on in a Task: the inventory loads
        # (threads) and the dynamic vendordata fetch (gathered in Tasks of its own).
        eager=True,
        logger=_HTTP_LOG,
        body_methods=frozenset({"POST"}),
        body_limit=PASSWORD_MAX_BYTES + 1,
        idle_timeout=idle_timeout,
        request_timeout=request_timeout,
        shortcut=shortcut,
        replay=replay,
        # As many request byte strings as answers kept (each ~0.3 KB).
        replay_size=answer_cache_size,
    )


def _listing_entries(body: bytes) -> list[str]:
    """The request target suffixes of an EC2-style listing's entries ("name", "dir/", and
    "0=key-name" for the directory "0/"); empty for anything that is not a listing's text."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return []
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or any(c in line for c in " ?#%\\"):
            continue
        name, eq, _ = line.partition("=")
        out.append(name + "/" if eq else line)
    return out


def _shortcut(
    answers: AnswerCache,
    cached_view: Callable[[str], object],
    responder: Responder,
    metrics: MetadataMetrics | None,
    clock: Callable[[], datetime],
    seeds: Callable[[], bytes],
    log: AccessLog,
) -> tuple[Shortcut, Replay]:
    """The hot path: a kept answer for a request, or None (see the module docstring); and the
    same for exact request bytes answered before (`LeanServer`'s replay)."""
    # Counted as the handler counts (metrics.answered_again); without metrics, the responder's
    # tree cache callback still hears of the reuse.
    answered_again = metrics.answered_again if metrics is not None else None
    cache_event = metrics.cache_event if metrics is not None else None
    count_reuse = responder.count_reuse
    again = log.again
    get = answers.get
    compare_digest = hmac.compare_digest
    perf_counter = time.perf_counter
    wall = time.time
    own_clock = clock is _utc_now
    # The UTC date, recomputed only when the wall clock leaves the day it was computed for
    # (the default clock); a clock passed in (tests) is asked every time.
    day, day_start, day_end = date.min, 0.0, 0.0

    def new_day(now: float) -> date:
        nonlocal day, day_start, day_end
        day = datetime.fromtimestamp(now, UTC).date()
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        day_start, day_end = start.timestamp(), (start + timedelta(days=1)).timestamp()
        return day

    def current(answer: Answer) -> bool:
        """Whether the source still hands out the view `answer` was made from, today."""
        if own_clock:
            now = wall()
            today = day if day_start <= now < day_end else new_day(now)
        else:
            today = clock().date()
        return cached_view(answer.uuid) is answer.view and today == answer.today

    def serve(answer: Answer, peer: str | None, started: float) -> tuple[bytes, bytes]:
        body = answer.content(seeds) if answer.suffix is not None else answer.body
        elapsed = perf_counter() - started
        if answered_again is not None:
            answered_again(answer.metric_key, elapsed, answer.uuid)
        else:
            count_reuse()
        again(peer, answer.log_entry, answer.fields, elapsed)
        return answer.head, body

    def shortcut(method: str, target: bytes, headers: list[tuple[bytes, bytes]],
                 peer: str | None) -> tuple[bytes, bytes, Answer] | None:
        if method != "GET" and method != "HEAD":
            return None
        started = perf_counter()
        identity = plain_identity(headers)
        if identity is None:
            return None
        key = (method, target, identity[0], identity[1])
        answer = get(key)
        if answer is None:
            if cache_event is not None:
                cache_event("answer", False)
            return None
        if not current(answer):
            # Overtaken by a change (or midnight): the Responder answers, and keeps the new one.
            answers.discard(key, answer)
            if cache_event is not None:
                cache_event("answer", False)
            return None
        if not compare_digest(answer.signature, identity[2]):
            return None  # the Responder refuses it (403), and logs why
        head, body = serve(answer, peer, started)
        # The same request bytes again get this answer again (`replay`) while it is current.
        return head, body, answer

    def replay(answer: Answer, peer: str | None) -> tuple[bytes, bytes] | None:
        """The request bytes that got `answer` (signature checked then) came again."""
        started = perf_counter()
        if not current(answer):
            return None  # parsed again: the shortcut drops it, the Responder answers
        return serve(answer, peer, started)

    return shortcut, replay
