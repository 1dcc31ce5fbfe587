"""The web console in a real browser: Debian's chromium driven by Playwright, against
the real embedded stack (Temporal dev server, control worker, local machines on the
Docker engine) and the console `conjure up` started. Asserts what a person sees: text
on the page, the bytes of a downloaded file.

Run alone with `pytest -m browser`. Needs /usr/bin/chromium (./test.sh installs it).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conjure.infra.config import Settings
from tests.cli.test_run_e2e import git
from tests.conftest import CONJURE, conjure, free_port, running_stack, stack_env

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SECRET = "browser-s3cr3t-" + uuid.uuid4().hex[:8]
MODEL = bytes(range(256)) * 40

TRAIN = """\
import os, time
from conjure_metrics import send_metric
print("secret is", os.environ["SECRET_TOKEN"], flush=True)
for i in range(6):
    print(f"epoch {i}", flush=True)
    send_metric("loss", 1.0 / (i + 1), step=i)
    time.sleep(1)
open("model.bin", "wb").write(bytes(range(256)) * 40)
print("done", flush=True)
"""

LONG = """\
import signal, sys, time
def on_term(*_):
    open("final.ckpt", "w").write("final\\n")
    print("wrote the final checkpoint", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
for i in range(100_000):
    print("tick", i, flush=True)
    time.sleep(0.3)
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: ./test.sh installs Debian's chromium")
    home = tmp_path_factory.mktemp("console-browser")
    with running_stack(stack_env(home, CONJURE_HARDWARE_METRICS_SECONDS="1")) as settings:
        yield settings


@pytest.fixture(scope="module")
def browser(stack: Settings) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def page(browser):  # type: ignore[no-untyped-def]
    context = browser.new_context(accept_downloads=True, viewport={"width": 1300, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert errors == [], errors


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("console-project")
    (repo / "train.py").write_text(TRAIN)
    (repo / "long.py").write_text(LONG)
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "train")
    with (repo / "train.py").open("a") as f:
        f.write("# an uncommitted tweak\n")
    return repo


def start(cwd: Path, *args: str) -> int:
    r = conjure("run", "--background", *args, cwd=cwd)
    assert r.code == 0, r
    return int(r.out.strip())


def test_run_page_live_log_metrics_downloads_no_secret(
    stack: Settings, page, project: Path
) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    base = stack.console_url
    n = start(project, "--env", f"SECRET_TOKEN={SECRET}", "python3 train.py")
    page.goto(f"{base}/runs/{n}")
    page.evaluate("window.__same_page = true")
    state = page.locator("#state .badge")
    log = page.locator("#log")

    # The state changes and the log lines arrive live, without a reload: a line is on
    # the page while the program is still printing the next ones.
    expect(state).to_have_text("Running", timeout=120_000)
    expect(log).to_contain_text("epoch 2", timeout=20_000)
    assert "done" not in log.inner_text()
    assert state.inner_text() == "Running"
    expect(log).to_contain_text("secret is <REDACTED>")
    expect(page.locator('[data-metric="loss"] svg path.line')).to_be_visible(timeout=20_000)
    expect(page.locator('[data-metric="hardware/cpu_percent"]')).to_be_visible(timeout=20_000)

    expect(state).to_have_text("Complete", timeout=120_000)
    expect(log).to_contain_text("done")
    assert page.evaluate("window.__same_page") is True
    expect(page.locator("#card")).to_contain_text("SECRET_TOKEN=<REDACTED>")

    # An output file downloads with the bytes the run wrote.
    link = page.locator(f'[data-path="runs/{n}/model.bin"] a')
    expect(link).to_be_visible(timeout=20_000)
    with page.expect_download() as dl:
        link.click()
    assert Path(dl.value.path()).read_bytes() == MODEL

    # The uncommitted changes download as a .diff file.
    with page.expect_download() as dl:
        page.locator("#diff").click()
    assert dl.value.suggested_filename == f"run-{n}.diff"
    diff = Path(dl.value.path()).read_text()
    assert "+# an uncommitted tweak" in diff and "train.py" in diff

    # The secret is in no page and no API answer.
    assert SECRET not in page.content()
    page.goto(f"{base}/")
    row = page.locator(f'tr[data-run="{n}"]')
    expect(row).to_contain_text("Complete")
    expect(row).to_contain_text("python3 train.py")
    assert SECRET not in page.content()
    answers = [
        "/api/info", "/api/runs", f"/api/runs/{n}", f"/api/runs/{n}/log",
        f"/api/runs/{n}/metrics", f"/api/runs/{n}/outputs", f"/api/resources?path=runs/{n}",
        "/api/machines", "/api/pipelines", "/api/resources",
    ]  # fmt: skip
    for path in answers:
        r = page.request.get(base + path)
        assert r.status == 200, (path, r.status, r.text())
        assert SECRET not in r.text(), path
    assert "secrets" not in json.dumps(page.request.get(f"{base}/api/resources").json())


def test_stop_saves_files_and_kill(stack: Settings, page, project: Path) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    base = stack.console_url
    stopped = start(project, "python3 long.py")
    killed = start(project, "python3 long.py")

    for n, button, final in ((stopped, "#stop", "Stopped"), (killed, "#kill", "Killed")):
        page.goto(f"{base}/runs/{n}")
        expect(page.locator("#log")).to_contain_text("tick 2", timeout=120_000)
        page.locator(button).click()
        dialog = page.locator("dialog#confirm")
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text(f"run {n}?")
        page.locator("#confirm-ok").click()
        expect(page.locator("#toast")).to_be_visible()
        # `Stopped (143)`: the state and the exit code of the command that got SIGTERM
        expect(page.locator("#state .badge")).to_have_text(re.compile(f"^{final}"), timeout=120_000)
        expect(page.locator(button)).to_be_hidden()

    page.goto(f"{base}/runs/{stopped}")
    expect(page.locator("#card")).to_contain_text("stopped from the web console")
    expect(page.locator(f'[data-path="runs/{stopped}/final.ckpt"]')).to_be_visible()
    expect(page.locator("#log")).to_contain_text("wrote the final checkpoint")
    page.goto(f"{base}/runs/{killed}")
    expect(page.locator("#card")).to_contain_text("killed from the web console")
    expect(page.locator("#outputs")).to_contain_text("No files saved")


def test_token_required(stack: Settings, browser) -> None:  # type: ignore[no-untyped-def]
    """A console that needs its token (as it does whenever it listens off loopback):
    the browser gets the login page, a wrong token is refused, the right one opens it."""
    from playwright.sync_api import expect

    port, token = free_port(), "tok-" + uuid.uuid4().hex
    proc = subprocess.Popen(
        [CONJURE, "console", "--port", str(port), "--token", token],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        context = browser.new_context()
        pg = context.new_page()
        deadline = time.monotonic() + 30
        while True:
            try:
                pg.goto(f"{base}/machines")
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.3)
        assert pg.url.startswith(f"{base}/login")
        assert pg.request.get(f"{base}/api/runs").status == 401
        pg.fill('input[name="token"]', "not-it")
        pg.click('button[type="submit"]')
        expect(pg.locator(".error")).to_contain_text("not this console's")
        pg.fill('input[name="token"]', token)
        pg.click('button[type="submit"]')
        expect(pg.locator("h1")).to_have_text("Machines")
        assert pg.url == f"{base}/machines"
        assert pg.request.get(f"{base}/api/runs").status == 200  # the session cookie
        assert token not in pg.content()
        context.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_hyper_page_ranks_runs_live(stack: Settings, page, project: Path) -> None:  # type: ignore[no-untyped-def]
    """A grid search's page: Running while its runs run, then Complete without a reload,
    its runs best first with their values, each linking to its run's page."""
    from playwright.sync_api import expect

    base = stack.console_url
    cmd = ("sleep 4; python3 -c 'from conjure_metrics import send_metric; "
           "send_metric(\"acc\", :rate: * 2, step=1)'")  # fmt: skip
    r = conjure("hyper", "grid", "--background", "-p", "rate=0.1,0.4,0.2", "--metric", "acc",
                "--parallel", "1", cmd, cwd=project)  # fmt: skip
    assert r.code == 0, r
    hid = int(r.out.strip())
    page.goto(f"{base}/hypers/{hid}")
    page.evaluate("window.__same_page = true")
    title = page.locator("h1")
    expect(title).to_contain_text(f"Hyperparameter search {hid} · grid")
    expect(title.locator(".badge")).to_have_text("Running", timeout=60_000)
    expect(page.locator("button", has_text="Stop")).to_be_visible()
    expect(title.locator(".badge")).to_have_text("Complete", timeout=180_000)
    assert page.evaluate("window.__same_page") is True  # updated in place
    expect(page.locator("button", has_text="Stop")).to_be_hidden()
    expect(page.locator(".panel").first).to_contain_text("3 of 3 ended")
    rows = page.locator("table tbody tr")
    expect(rows).to_have_count(3)
    cells = [rows.nth(i).locator("td").all_inner_texts() for i in range(3)]
    assert [(c[1], c[2], c[3]) for c in cells] == [
        ("Complete", "0.4", "0.8"), ("Complete", "0.2", "0.4"), ("Complete", "0.1", "0.2"),
    ], cells  # fmt: skip
    best = cells[0][0]
    rows.first.locator("a").click()
    expect(page).to_have_url(f"{base}/runs/{best}")
    expect(page.locator("#state .badge")).to_have_text("Complete")
