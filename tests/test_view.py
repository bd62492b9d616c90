"""tracemill view: the pages over a small fixture run, bad input as one clear line, the read-only SQL box,
and a real headless Chromium clicking problem → trace → tree node → pair through `tracemill view`."""

from __future__ import annotations

import base64
import html
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import view_fixture as fx
from starlette.testclient import TestClient

from tracemill import store
from tracemill.view import create_app

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
DOCS = Path(__file__).resolve().parent.parent / "docs" / "view"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return fx.write_run(tmp_path_factory.mktemp("view-run"))


@pytest.fixture(scope="module")
def client(run_dir) -> TestClient:
    return TestClient(
        create_app(run_dir / "data", run_dir / "metrics", run_dir / "plots"), raise_server_exceptions=False
    )


def text_of(page: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))


def test_every_page_shows_the_fixture_run(client):
    pages = {
        "/problems": [fx.P1, fx.P2, "gsm8k", "hint_infer, rstar_search"],
        f"/problem/{fx.P1}": [fx.HINT_TRACE, fx.TREE_R1, fx.TREE_R2, fx.PAIR_STEP, fx.COAT_ID, fx.STATE_ID, "d_seed"],
        f"/trace/{fx.HINT_TRACE}": [
            fx.HINT_TEXT,
            "h-python inserted at character 28",
            "print(3 + 4)",
            "correct",
            "cached 32",
        ],
        f"/tree/{fx.TREE_R1}?node={fx.NODE_BAD}": ["Tom gives away 4 apples.", "SyntaxError", "failed", "traj-win-1"],
        f"/tree/{fx.TREE_R2}": ["P 0.95", "round 2"],
        f"/pair/{fx.PAIR_FINAL}": ["So Tom has \\boxed{7} apples.", "So Tom has \\boxed{12} apples.", "final step"],
        f"/coat/{fx.COAT_ID}": ["<|reflect|>", fx.NODE_MISS],
        f"/rae/{fx.STATE_ID}": ["restart point", fx.NODE_GOOD],
        "/runs": ["rstar_r2", "level 3", "eval_pass_at_1", "solve_rate"],
        "/sql?q=select+stage,+count(*)+as+n+from+traces+group+by+1": ["hint_infer", "2"],
        "/tables": ["rejected", "not written yet"],
    }
    for url, expected in pages.items():
        r = client.get(url)
        assert r.status_code == 200, (url, text_of(r.text)[:300])
        for snippet in expected:
            assert snippet in text_of(r.text), (url, snippet)


def test_filters_and_pagination_happen_in_sql(client):
    assert fx.P2 not in client.get("/problems?solved_by=hint_infer").text
    assert fx.P1 not in client.get("/problems?difficulty=3").text
    assert fx.P1 in client.get("/problems?q=apples").text
    r = client.get("/table/nodes?page=abc")  # a bad page number is page 1
    assert r.status_code == 200 and 'data-total="10"' in r.text


def test_trace_marks_which_segments_carry_the_loss_from_its_sft_row(client):
    html = client.get(f"/trace/{fx.HINT_TRACE}").text
    kinds = re.findall(r'data-kind="(\w+)" data-loss="(\w+)"', html)
    # the SFT row trains on the hint (START), the trace's own mask does not; tool output and prompt never
    assert kinds == [
        ("prompt", "false"),
        ("model", "true"),
        ("hint", "true"),
        ("code", "true"),
        ("output", "false"),
        ("model", "true"),
    ]
    assert "d_seed" in html


@pytest.mark.parametrize(
    "url, message, status",
    [
        ("/problem/no-such-problem", "no problem with problem_id 'no-such-problem'", 404),
        ("/trace/nope", "no trace with trace_id 'nope'", 404),
        ("/tree/nope", "no search tree with tree_id 'nope'", 404),
        (f"/tree/{fx.TREE_R1}?node=nope", f"tree '{fx.TREE_R1}' has no node 'nope'", 404),
        ("/table/secrets", "unknown table 'secrets'", 404),
        ("/table/rejected", "table 'rejected' has not been written yet", 200),
        ("/no/such/page", "Not Found", 404),
        ("/sql?q=select+*+from+nowhere", "Table with name nowhere does not exist", 200),
        ("/sql?q=selec+1", "syntax error", 200),
    ],
)
def test_bad_input_shows_one_clear_line_never_a_trace(client, url, message, status):
    r = client.get(url)
    assert r.status_code == status
    assert message in text_of(r.text)
    assert "Traceback" not in r.text and 'File "' not in r.text


def test_sql_box_is_read_only(client, run_dir, tmp_path):
    target = tmp_path / "out.csv"
    attempts = {
        f"COPY traces TO '{target}'": "only SELECT",
        f"ATTACH '{tmp_path / 'x.duckdb'}' AS x": "only SELECT",
        "CREATE TABLE t AS SELECT 1": "only SELECT",
        "SET enable_external_access = true": "only SELECT",
        "INSTALL httpfs": "only SELECT",
        "SELECT 1; DROP VIEW traces": "one statement",
        "SELECT * FROM read_csv('/etc/passwd')": "file system operations are disabled",
        f"SELECT * FROM read_text('{run_dir / 'metrics' / 'evaluate.json'}')": "file system operations are disabled",
    }
    for query, message in attempts.items():
        r = client.get("/sql", params={"q": query})
        assert message in text_of(r.text), query
    assert not target.exists() and not (tmp_path / "x.duckdb").exists()
    assert "2" in client.get("/sql", params={"q": "SELECT count(*) FROM traces"}).text  # the views still answer


def test_a_table_with_a_bad_part_is_named_and_the_rest_is_served(tmp_path):
    root = fx.write_run(tmp_path)
    part = next((root / "data" / "coat" / "coat").glob(store.PART_GLOB))
    part.write_bytes(b"not parquet")
    c = TestClient(create_app(root / "data", root / "metrics", root / "plots"), raise_server_exceptions=False)
    r = c.get(f"/coat/{fx.COAT_ID}")
    assert "table 'coat' is unavailable" in text_of(r.text) and "Traceback" not in r.text
    assert c.get(f"/problem/{fx.P2}").status_code == 200


def test_a_bad_traces_part_leaves_the_problems_page_standing(tmp_path):
    root = fx.write_run(tmp_path)
    part = next((root / "data" / "hint_infer" / "traces").glob(store.PART_GLOB))
    part.write_bytes(b"not parquet")
    c = TestClient(create_app(root / "data", root / "metrics", root / "plots"), raise_server_exceptions=False)
    r = c.get("/problems")
    assert r.status_code == 200 and fx.P1 in r.text and "Traceback" not in r.text


def test_sql_ending_in_a_comment_runs(client):
    r = client.get("/sql", params={"q": "SELECT 41 + 1 AS answer -- the usual"})
    assert "42" in text_of(r.text) and "syntax error" not in text_of(r.text)


def test_a_chart_with_negative_values_draws_them_below_zero(tmp_path):
    from tracemill.view import charts

    plot = tmp_path / "rl_reward.csv"
    plot.write_text("step,reward\n" + "".join(f"{s},{-1.0 if s < 8 else 1.0}\n" for s in range(1, 17)))
    chart = charts.chart(plot)
    ((_, points),) = chart.series
    assert chart.y_min == -1.0 and chart.y_max == 1.0
    assert all(y > chart.zero for _, y in points[:7]) and all(y < chart.zero for _, y in points[7:])


def test_run_without_metrics_says_so(tmp_path):
    root = fx.write_run(tmp_path)
    c = TestClient(create_app(root / "data", tmp_path / "none", tmp_path / "none"))
    assert "no metrics in" in c.get("/runs").text


# ---- a real browser ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(run_dir):
    """`tracemill view` as a user starts it, on a free port."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tracemill.cli",
            "view",
            "--port",
            str(port),
            "--data",
            str(run_dir / "data"),
            "--metrics",
            str(run_dir / "metrics"),
            "--plots",
            str(run_dir / "plots"),
            "--threads",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"tracemill view exited: {proc.stdout.read()}")
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(
            "Chromium is not installed (/usr/bin/chromium, /usr/bin/chromedriver): run `make install-browser` as root"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900", "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(
        service=Service(executable_path=str(CHROMEDRIVER)), options=options
    )  # no Selenium Manager download
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


def shot(driver, name: str, out: Path) -> None:
    """A full-page screenshot (DevTools captures beyond the window); TRACEMILL_VIEW_SCREENSHOTS=docs/view
    refreshes the ones the docs show."""
    out.mkdir(parents=True, exist_ok=True)
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": 1280, "height": min(int(size["height"]), 2400), "scale": 1}
    png = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )["data"]
    (out / f"{name}.png").write_bytes(base64.b64decode(png))


def test_browser_clicks_problem_trace_tree_node_pair(browser, served, tmp_path):
    from selenium.webdriver.common.by import By

    out = Path(os.environ.get("TRACEMILL_VIEW_SCREENSHOTS", tmp_path))
    d = browser
    d.get(f"{served}/problems")
    assert d.find_element(By.ID, "problems").text.count("gsm8k") == 1
    shot(d, "problems", out)
    d.find_element(By.LINK_TEXT, fx.P1).click()
    assert "Tom has 3 apples" in d.find_element(By.ID, "question").text
    shot(d, "problem", out)

    d.find_element(By.LINK_TEXT, fx.HINT_TRACE).click()
    hint = d.find_element(By.CSS_SELECTOR, "#segments .seg.hint")
    assert fx.HINT_TEXT in hint.text and "h-python" in hint.text and "loss" in hint.text
    assert d.find_element(By.CSS_SELECTOR, "#segments .seg.output").get_attribute("data-loss") == "false"
    assert "correct" in d.find_element(By.ID, "verdict").text and "7" in d.find_element(By.ID, "answer").text
    shot(d, "trace", out)

    d.find_element(By.LINK_TEXT, fx.P1).click()
    d.find_element(By.LINK_TEXT, fx.TREE_R1).click()
    assert len(d.find_elements(By.CSS_SELECTOR, "#tree a.tree-node")) == 5
    assert len(d.find_elements(By.CSS_SELECTOR, "#tree line.top-edge")) == 2  # the selected trajectory root → win
    d.find_element(By.CSS_SELECTOR, f'#tree a.tree-node[data-node="{fx.NODE_MISS}"]').click()
    assert "\\boxed{12}" in d.find_element(By.ID, "node-step").text
    assert "wrong" in d.find_element(By.ID, "node").text
    shot(d, "tree", out)

    d.find_element(By.LINK_TEXT, fx.PAIR_FINAL).click()
    assert (
        "\\boxed{7}" in d.find_element(By.ID, "chosen").text and "\\boxed{12}" in d.find_element(By.ID, "rejected").text
    )
    assert "buys 4 more" in d.find_element(By.ID, "prefix").text
    shot(d, "pair", out)
    d.find_element(By.ID, "pair-tree").click()
    assert (
        len(d.find_elements(By.CSS_SELECTOR, "#tree .chosen-ring")) == 1
        and len(d.find_elements(By.CSS_SELECTOR, "#tree .rejected-ring")) == 1
    )

    d.get(f"{served}/coat/{fx.COAT_ID}")
    assert [m.text for m in d.find_elements(By.CSS_SELECTOR, "#coat-text .meta")] == [
        "<|continue|>",
        "<|reflect|>",
        "<|explore|>",
    ]
    shot(d, "coat", out)
    d.get(f"{served}/rae/{fx.STATE_ID}")
    d.find_element(By.CSS_SELECTOR, "#restart a").click()
    assert fx.NODE_GOOD in d.find_element(By.ID, "node").text
    d.get(f"{served}/rae/{fx.STATE_ID}")
    shot(d, "rae", out)

    d.get(f"{served}/runs")
    assert (
        "rstar_r2" in d.find_element(By.ID, "accuracy").text and len(d.find_elements(By.CSS_SELECTOR, "svg.chart")) == 2
    )
    shot(d, "runs", out)
    d.get(f"{served}/sql")
    d.find_element(By.ID, "sql-input").send_keys("select problem_id, count(*) as traces from traces group by 1")
    d.find_element(By.ID, "sql-run").click()
    assert fx.P1 in d.find_element(By.ID, "sql-result").text
    shot(d, "sql", out)
    d.get(f"{served}/sql?q=COPY+traces+TO+'x.csv'")
    assert "read-only" in d.find_element(By.ID, "sql-error").text
    d.get(f"{served}/problem/nope")
    assert "no problem with problem_id 'nope'" in d.find_element(By.ID, "error").text
