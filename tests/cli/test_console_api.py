"""The web console's JSON API and its guard, through Starlette's TestClient (no browser
needed): run listing and paging over a real Temporal dev server's visibility, the
log and metrics endpoints over a real local store, downloads and the places they
must not reach, the token, the host and cross-site checks, the OpenAPI document, and
`conjure console`'s refusals."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from temporalio.client import Client
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
)

from conjure.cli import listing
from conjure.cli.console.app import create_app
from conjure.cli.console.openapi import openapi_path
from conjure.cli.console.security import COOKIE
from conjure.infra import stack
from conjure.infra.config import Settings
from conjure.infra.console_token import resolve_token
from conjure.infra.errors import UsageError
from conjure.infra.store import open_store
from conjure.workflows import keys
from tests.conftest import conjure, free_port, wait_for_starts

STATES = ["Complete", "Failed", "Running", "Stopped"]
N_RUNS = 130
BASE = "http://127.0.0.1:8234"


def settings_for(home: Path, port: int = 0) -> Settings:
    return Settings(home=home, embedded_port=port or free_port(), embedded_ui_port=free_port())


@pytest.fixture(scope="module")
def visibility(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A bare Temporal dev server (in memory) holding N_RUNS run workflows and three
    pipelines that no worker runs: what the listing reads is visibility alone."""
    home = tmp_path_factory.mktemp("console-api")
    settings = settings_for(home)
    proc = subprocess.Popen(
        stack.dev_server_command(settings, None, ui=False),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        asyncio.run(_populate(settings))
        yield settings
    finally:
        proc.terminate()
        proc.wait(timeout=20)


async def _populate(settings: Settings) -> None:
    client = await wait_for_starts(settings.address)
    queue = f"nobody-{uuid.uuid4().hex}"
    for i in range(1, N_RUNS + 1):
        state = "Requested" if i <= 3 else STATES[i % len(STATES)]
        attrs = [
            SearchAttributePair(keys.RUN_ID, i),
            SearchAttributePair(keys.STATE, state),
            SearchAttributePair(keys.MACHINE_TYPE, "gpu" if i % 10 == 0 else "cpu"),
            SearchAttributePair(
                keys.COMMAND, f"python train.py --seed {i}" if i % 2 else f"echo hello {i}"
            ),
        ]
        if i in (40, 41):
            attrs.append(SearchAttributePair(keys.PIPELINE_ID, 2))
        memo = {keys.EXIT_CODE_MEMO: 137} if i == 125 else None
        await client.start_workflow(
            "RunWorkflow", id=f"run-{i}", task_queue=queue, memo=memo,
            search_attributes=TypedSearchAttributes(attrs),
        )  # fmt: skip
    for p in (1, 2, 3):
        await client.start_workflow(
            "PipelineWorkflow", id=f"pipeline-{p}", task_queue=queue,
            search_attributes=TypedSearchAttributes([SearchAttributePair(keys.PIPELINE_ID, p)]),
        )  # fmt: skip
    while (await client.count_workflows("WorkflowType='RunWorkflow'")).count < N_RUNS:
        await asyncio.sleep(0.2)


def state_of(i: int) -> str:
    return "Requested" if i <= 3 else STATES[i % len(STATES)]


def client_for(settings: Settings, token: str | None = None) -> TestClient:
    return TestClient(create_app(settings, token=token), base_url=BASE)


# --- listing ---------------------------------------------------------------------------


def test_pages_go_newest_first_through_every_run_once(visibility: Settings) -> None:
    async def all_pages(flt: listing.RunFilter, limit: int) -> list[list[int]]:
        client = await Client.connect(visibility.address)
        pages, before = [], None
        while True:
            page = await listing.runs_page(client, flt, limit=limit, before=before)
            pages.append([r.run_id for r in page.runs])
            if page.next_before is None:
                return pages
            before = page.next_before

    pages = asyncio.run(all_pages(listing.RunFilter(), 50))
    assert [len(p) for p in pages] == [50, 50, 30]
    assert sum(pages, []) == list(range(N_RUNS, 0, -1))

    # A sparse filter: the three Requested runs sit at the oldest ids, far below the first
    # window, and a mid-density one (every fourth run) pages the same way.
    sparse = asyncio.run(all_pages(listing.RunFilter(state="Requested"), 50))
    assert sparse == [[3, 2, 1]]
    failed = sum(asyncio.run(all_pages(listing.RunFilter(state="Failed"), 7)), [])
    assert failed == [i for i in range(N_RUNS, 3, -1) if state_of(i) == "Failed"]


def test_a_stale_hint_of_the_top_id_never_changes_the_page(visibility: Settings) -> None:
    """The newest page starts where the last one found the top id: runs started since
    (a hint too low) and a hint too high (a new server on the same address) still give
    the true newest page."""

    async def newest(hint: int | None) -> list[int]:
        client = await Client.connect(visibility.address)
        flt = listing.RunFilter()
        key = (client.service_client.config.target_host, client.namespace, flt.query())
        listing._TOP_HINTS.pop(key, None)
        if hint is not None:
            listing._TOP_HINTS[key] = hint
        page = await listing.runs_page(client, flt, limit=10)
        assert listing._TOP_HINTS[key] == N_RUNS
        return [r.run_id for r in page.runs]

    want = list(range(N_RUNS, N_RUNS - 10, -1))
    for hint in (None, 5, N_RUNS, 100_000):
        assert asyncio.run(newest(hint)) == want, hint


def test_filters_state_machine_type_words_pipeline(visibility: Settings) -> None:
    c = client_for(visibility)
    r = c.get("/api/runs", params={"machine_type": "gpu", "state": "Failed", "limit": 500})
    assert r.status_code == 200, r.text
    body = r.json()
    want = [i for i in range(N_RUNS, 0, -1) if i % 10 == 0 and state_of(i) == "Failed"]
    assert [x["id"] for x in body["runs"]] == want and body["total"] == len(want)
    words = c.get("/api/runs", params={"q": "train", "limit": 10}).json()
    assert [x["id"] for x in words["runs"]] == [129, 127, 125, 123, 121, 119, 117, 115, 113, 111]
    assert all("train" in x["command"] for x in words["runs"])
    assert [x["id"] for x in c.get("/api/runs?pipeline=2").json()["runs"]] == [41, 40]


def test_runs_answer_shows_exit_code_and_paging(visibility: Settings) -> None:
    c = client_for(visibility)
    body = c.get("/api/runs", params={"limit": 6}).json()
    assert body["total"] == N_RUNS and body["next_before"] == 125
    row = {x["id"]: x for x in body["runs"]}[125]
    assert row["exit_code"] == 137 and row["state_text"] == f"{row['state']} (137)"
    older = c.get("/api/runs", params={"limit": 6, "before": 125}).json()
    assert [x["id"] for x in older["runs"]] == [124, 123, 122, 121, 120, 119]
    assert c.get("/api/runs?count=0").json()["total"] is None


def test_bad_filters_are_400_and_unknown_run_404(visibility: Settings) -> None:
    c = client_for(visibility)
    r = c.get("/api/runs", params={"state": "Sleeping"})
    assert r.status_code == 400 and "unknown state" in r.json()["error"]
    r = c.get("/api/runs", params={"q": "x' OR 1=1"})
    assert r.status_code == 400 and "quotes" in r.json()["error"]
    assert c.get("/api/runs?before=abc").status_code == 400
    r = c.get("/api/runs/99999")
    assert r.status_code == 404 and "does not exist" in r.json()["error"]
    with pytest.raises(UsageError):
        listing.RunFilter(machine_type="a\\b").query()


def test_pipelines_newest_first(visibility: Settings) -> None:
    body = client_for(visibility).get("/api/pipelines", params={"limit": 2}).json()
    assert [p["id"] for p in body["pipelines"]] == [3, 2] and body["next_before"] == 2
    assert body["pipelines"][0]["status"] == "Running"


# --- logs and metrics from the store ---------------------------------------------------


def test_log_cursor_returns_only_new_lines(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    store = open_store(settings.store)

    def chunk(n: int, *lines: str) -> None:
        data = "".join(
            json.dumps({"t": n * 1000 + i, "s": "o", "l": ln}) + "\n" for i, ln in enumerate(lines)
        )
        store.put_bytes(f"logs/7/{n:020d}-run.jsonl", data.encode())

    chunk(1, "one", "two")
    c = client_for(settings)
    first = c.get("/api/runs/7/log").json()
    assert [ln["text"] for ln in first["lines"]] == ["one", "two"] and not first["more"]
    assert c.get("/api/runs/7/log", params={"after": first["cursor"]}).json()["lines"] == []
    chunk(2, "three")
    later = c.get("/api/runs/7/log", params={"after": first["cursor"]}).json()
    assert [ln["text"] for ln in later["lines"]] == ["three"]
    assert c.get("/api/runs/7/log", params={"after": "../../secrets"}).status_code == 400

    for n in range(3, 3 + 205):  # more chunks than one answer carries
        chunk(n, f"line {n}")
    texts, cursor, answers = [], "", 0
    while True:
        page = c.get("/api/runs/7/log", params={"after": cursor}).json()
        answers += 1
        texts += [ln["text"] for ln in page["lines"]]
        cursor = page["cursor"]
        if not page["more"]:
            break
    assert answers == 2
    assert texts == ["one", "two", "three"] + [f"line {n}" for n in range(3, 208)]


def test_metrics_series_user_first_nan_as_null(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    store = open_store(settings.store)
    pts = [
        {"n": "loss", "v": 0.5, "i": 1, "t": 1_000_000_000, "s": 0, "o": 10},
        {"n": "loss", "v": "nan", "i": 2, "t": 2_000_000_000, "s": 1, "o": 20},
        {"n": "hardware/cpu_percent", "v": 99.0, "i": 1, "t": 1_500_000_000},
    ]
    store.put_bytes(
        "metrics/8/00000000000000000001-u30.jsonl",
        "".join(json.dumps(p) + "\n" for p in pts).encode(),
    )
    body = client_for(settings).get("/api/runs/8/metrics").json()
    assert [(s["name"], s["hardware"]) for s in body["series"]] == [
        ("loss", False),
        ("hardware/cpu_percent", True),
    ]
    loss = body["series"][0]
    assert loss["value"] == [0.5, None] and loss["step"] == [0, 1] and loss["t"] == [1.0, 2.0]


# --- downloads -------------------------------------------------------------------------


@pytest.fixture()
def stored(tmp_path: Path) -> Settings:
    settings = settings_for(tmp_path)
    store = open_store(settings.store)
    store.put_bytes("runs/5/out/a.txt", b"alpha\n")
    store.put_bytes("runs/5/out/sub/b.bin", bytes(range(256)) * 2000)
    store.put_bytes("uploads/data/x.csv", b"1,2\n")
    store.put_bytes("secrets/req.json", b'{"SECRET_X": "s3cr3t-value"}')
    store.put_bytes("logs/5/00000000000000000001-run.jsonl", b"{}\n")
    os.symlink("/etc/hostname", Path(store.root) / "runs/5/out/planted")
    return settings


def test_file_and_folder_downloads(stored: Settings) -> None:
    c = client_for(stored)
    r = c.get("/api/resources/download", params={"path": "runs/5/out/a.txt"})
    assert r.status_code == 200 and r.content == b"alpha\n"
    assert 'filename="a.txt"' in r.headers["content-disposition"]
    r = c.get("/api/resources/download", params={"path": "runs/5/out"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/gzip"
    assert 'filename="out.tar.gz"' in r.headers["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
        names = sorted(tar.getnames())
        assert names == ["out/a.txt", "out/sub/b.bin"]  # the planted link is not followed
        member = tar.extractfile("out/sub/b.bin")
        assert member is not None and member.read() == bytes(range(256)) * 2000
    listed = c.get("/api/runs/5/outputs", params={"path": "out"}).json()
    assert [(e["name"], e["dir"]) for e in listed["entries"]] == [("a.txt", False), ("sub", True)]
    roots = c.get("/api/resources").json()
    assert sorted(e["path"] for e in roots["entries"]) == ["runs", "uploads"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("secrets/req.json", 403),
        ("runs/5/../../secrets/req.json", 400),
        ("../etc/passwd", 400),
        ("/etc/passwd", 400),
        ("logs/5", 400),
        ("runs/5/out/planted", 400),
        ("runs/5/nothing", 404),
        ("", 400),
    ],
)
def test_downloads_stay_in_the_store(stored: Settings, path: str, status: int) -> None:
    c = client_for(stored)
    r = c.get("/api/resources/download", params={"path": path})
    assert r.status_code == status, r.text
    assert b"s3cr3t-value" not in r.content and b"root:" not in r.content
    listing_r = c.get("/api/resources", params={"path": path})
    assert b"s3cr3t-value" not in listing_r.content


# --- the guard -------------------------------------------------------------------------


def test_loopback_console_refuses_other_hosts_and_cross_site_posts(stored: Settings) -> None:
    c = client_for(stored)
    page = c.get("/runs/12")
    assert page.status_code == 200 and '<main id="main">' in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert c.get("/nope").status_code == 404
    # DNS rebinding: a page of evil.example resolving to 127.0.0.1 is not answered.
    assert c.get("/api/resources", headers={"host": "evil.example:8234"}).status_code == 421
    assert c.get("/api/resources", headers={"host": "localhost:8234"}).status_code == 200
    for headers in ({"origin": "http://evil.example"}, {"sec-fetch-site": "cross-site"},
                    {"sec-fetch-site": "same-site", "origin": "http://127.0.0.1:8234"},
                    {"origin": "null"}):  # fmt: skip
        r = c.post("/api/runs/1/kill", headers=headers)
        assert r.status_code == 403 and r.json()["error"] == "cross-site request refused"


def test_token_bearer_cookie_and_login(stored: Settings) -> None:
    token = "tok-" + uuid.uuid4().hex
    c = client_for(stored, token=token)
    r = c.get("/api/resources")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert c.get("/api/resources", headers={"authorization": "Bearer nope"}).status_code == 401
    ok = c.get("/api/resources", headers={"authorization": f"Bearer {token}"})
    assert ok.status_code == 200
    page = c.get("/runs/3?x=1", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Fruns%2F3%3Fx%3D1"
    form = c.get("/login")
    assert form.status_code == 200 and 'name="token"' in form.text
    bad = c.post("/login", data={"token": "wrong", "next": "/"}, follow_redirects=False)
    assert bad.status_code == 401 and COOKIE not in bad.cookies
    good = c.post("/login", data={"token": token, "next": "/runs/3"}, follow_redirects=False)
    assert good.status_code == 303 and good.headers["location"] == "/runs/3"
    cookie = good.cookies[COOKIE]
    assert cookie and token not in cookie
    assert "httponly" in good.headers["set-cookie"].lower()
    assert "samesite=strict" in good.headers["set-cookie"].lower()
    assert c.get("/api/resources", cookies={COOKIE: cookie}).status_code == 200
    # An open redirect through `next` is refused.
    away = c.post(
        "/login", data={"token": token, "next": "//evil.example/"}, follow_redirects=False
    )
    assert away.headers["location"] == "/"
    link = TestClient(create_app(stored, token=token), base_url=BASE)
    r = link.get(f"/login?token={token}&next=/machines", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/machines"


def test_off_loopback_never_without_a_token(tmp_path: Path) -> None:
    s = settings_for(tmp_path).model_copy(update={"console_bind": "0.0.0.0"})
    token, generated = resolve_token(s)
    assert token and generated
    assert (tmp_path / "console.token").stat().st_mode & 0o777 == 0o600
    assert resolve_token(s) == (token, False)  # kept: `conjure up` and the console agree
    assert resolve_token(s.model_copy(update={"console_bind": "127.0.0.1"})) == (None, False)
    assert resolve_token(s.model_copy(update={"console_token": "mine"})) == ("mine", False)


def test_conjure_console_refusals(tmp_path: Path) -> None:
    env = {"CONJURE_HOME": str(tmp_path)}
    # An address this machine does not have: off loopback a token is made first (never
    # a console without one), then one line says why it cannot listen.
    r = conjure("console", "--bind", "192.0.2.1", "--port", str(free_port()), env=env)
    assert r.code == 1, r
    assert r.err.startswith("error: the console cannot listen on 192.0.2.1:"), r
    assert len(r.err.splitlines()) == 1
    assert (tmp_path / "console.token").stat().st_mode & 0o777 == 0o600
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = conjure("console", "--port", str(port), env=env)
    assert r.code == 1 and "the port is taken" in r.err, r
    r = conjure("console", "--bind", " ", env=env)
    assert r.code == 2 and "empty address" in r.err, r


def test_openapi_documents_every_api_route(stored: Settings) -> None:
    app = create_app(stored)
    doc = TestClient(app, base_url=BASE).get("/api/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    routes = {
        (openapi_path(r.path), m.lower())
        for r in app.routes
        if getattr(r, "path", "").startswith("/api/") and r.path != "/api/openapi.json"  # type: ignore[attr-defined]
        for m in (r.methods or ()) if m != "HEAD"  # type: ignore[attr-defined]
    }  # fmt: skip
    documented = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    assert routes == documented and len(routes) >= 15
    for ops in doc["paths"].values():
        for op in ops.values():
            ref = op["responses"]["200"]["content"]
            for media in ref.values():
                target = media["schema"].get("$ref", "")
                if target:
                    assert target.rsplit("/", 1)[-1] in doc["components"]["schemas"]
    assert "RunDetail" in doc["components"]["schemas"]
