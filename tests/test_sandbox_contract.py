"""The sandbox contract, run against every available backend (local always; e2b with E2B_API_KEY)."""

import os
import re

import pytest

from tracemill.params import parse_section
from tracemill.sandbox import SandboxError, SandboxParams, open_sandbox

BACKENDS = ["local"] + (["e2b"] if os.environ.get("E2B_API_KEY") else [])


@pytest.fixture(scope="module", params=BACKENDS)
def sandbox(request):
    params = parse_section(
        SandboxParams, {"backend": request.param, "timeout_s": 2.0, "max_output_bytes": 1000}, "sandbox"
    )
    with open_sandbox(params) as sb:
        yield sb


def test_output_and_state_persist_across_cells(sandbox):
    with sandbox.session() as s:
        assert s.run("x = 6\nprint('set')").stdout == "set\n"
        s.run("y = x * 7")
        r = s.run("print(x, y)")
        assert r.status == "ok" and r.stdout == "6 42\n" and r.ok


def test_state_never_leaks_between_sessions(sandbox):
    with sandbox.session() as a, sandbox.session() as b:
        a.run("secret = 1")
        r = b.run("print(secret)")
        assert r.status == "error" and "NameError" in r.stderr


def test_traceback_is_reported_and_the_session_survives(sandbox):
    with sandbox.session() as s:
        r = s.run("def f():\n    return 1 / 0\nf()")
        assert r.status == "error" and "ZeroDivisionError" in r.stderr and "<cell>" in r.stderr
        assert s.run("print('still here')").stdout == "still here\n"


def test_timeout_is_classified_and_bounded(sandbox):
    with sandbox.session() as s:
        r = s.run("while True:\n    pass")
        assert r.status == "timeout" and r.wall_s < 5


def test_output_is_truncated_with_a_marker(sandbox):
    with sandbox.session() as s:
        r = s.run("print('x' * 5000)")
        assert r.status == "output_truncated" and r.ok
        assert r.stdout.startswith("x" * 1000) and "truncated" in r.stdout and len(r.stdout) < 1200


def test_sympy_and_numpy_are_ready(sandbox):
    with sandbox.session() as s:
        r = s.run(
            "import sympy, numpy\nx = sympy.symbols('x')\nprint(sympy.solve(x**2 - 4, x), int(numpy.arange(5).sum()))"
        )
        assert r.stdout == "[-2, 2]\n10\n" or r.stdout == "[-2, 2] 10\n"


def test_run_many_runs_sessions_in_parallel(sandbox):
    results = sandbox.run_many([[f"a = {i}", "print(a * 2)"] for i in range(12)])
    assert [r[1].stdout for r in results] == [f"{2 * i}\n" for i in range(12)]


def test_fork_snapshots_state_without_sharing_it(sandbox):
    if "e2b-microvm" in sandbox.active_layers:
        pytest.skip("remote kernels cannot fork")
    with sandbox.session() as s:
        s.run("steps = [1]")
        with s.fork() as f:
            f.run("steps.append(2)")
            assert f.run("print(steps)").stdout == "[1, 2]\n"
        assert s.run("print(steps)").stdout == "[1]\n"


def test_output_written_straight_to_file_descriptors_is_each_cells_own(sandbox):
    """os.write(1, ...) and C code bypass sys.stdout; each cell gets exactly what it wrote, however
    much earlier cells wrote, and a fork's raw output is its own."""
    if "e2b-microvm" in sandbox.active_layers:
        pytest.skip("a remote kernel's file descriptors are not the cell's output")
    with sandbox.session() as s:
        assert s.run("import os\nn = os.write(1, b'first cell\\n')").stdout == "first cell\n"
        assert s.run("n = os.write(1, b'two\\n')").stdout == "two\n"
        assert s.run("n = os.write(2, b'err\\n')").stdout == "err\n"
        with s.fork() as f:
            assert f.run("n = os.write(1, b'fork\\n')").stdout == "fork\n"
        assert s.run("n = 0").stdout == ""


def test_sessions_do_not_share_a_random_stream(sandbox):
    draws = [r[0].stdout for r in sandbox.run_many([["import random\nprint(random.random())"]] * 4)]
    assert all(d.strip() for d in draws) and len(set(draws)) == 4


def test_closed_forks_free_their_slots_and_a_refused_fork_keeps_its_session(sandbox):
    if "e2b-microvm" in sandbox.active_layers:
        pytest.skip("remote kernels cannot fork")
    limit = sandbox.params.max_processes
    with sandbox.session() as s:
        s.run("v = 1")
        for _ in range(2 * limit):  # one fork per MCTS expansion, closed after use
            with s.fork() as f:
                assert f.run("print(v)").stdout == "1\n"
        held = []
        with pytest.raises(SandboxError, match="max_processes"):
            for _ in range(limit + 1):
                held.append(s.fork())
        for f in held:
            f.close()
        assert s.run("print(v)").stdout == "1\n"


ECHO_CASES = [
    "1 + 1",
    "x = 2",
    "x = 2\nx * 3",
    "print('hi')",
    "x = 2\nx",
    "# note\nx = 5\nx\n\n# end\n",
    "x = 1; x",
    "x = 1; y = 2",
    "f = lambda: 3\nf(\n)",
    "foo = [1,\n2]",
    "foo = [1,\n2]\nlen(foo\n)",
    "(1,\n2)",
    "s = '''a\nb'''",
    "s = '''a\nb'''\ns",
    "s = '''a\n'''; s",
    "if True:\n    y = 1\nelse:\n    y = 2",
    "if True:\n    7",
    "for i in range(3):\n    i",
    "def f():\n    return 4\nf()",
    "@staticmethod\ndef g():\n    pass",
    "x = 1 + \\\n2",
    "x = 1 + \\\n2\nx",
    "a = [1, 2]\n*a, 3",
    "None",
    "import math\nmath.pi",
    "try:\n    1 / 0\nexcept ZeroDivisionError:\n    9",
    "x = (\n1)\n[x,\n x]",
    "\n\n",
    "",
    "1/0",
    "x = ",
    "class C:\n    pass\nC.__name__",
    "x = 3\r\nx + 1\r\n",
    "x = 5\n(x := 6)",
    "y = 8  # c\ny  # c",
    "\tx = 1",
]


@pytest.mark.parametrize("code", ECHO_CASES)
def test_cells_compile_to_what_their_ast_says(code):
    """compile_cell's split of a cell's last expression matches the ast's reading of the same cell:
    the same value echoed, the same namespace left, the same error raised."""
    import ast

    from tracemill.sandbox.cell import compile_cell

    def by_ast():
        tree = ast.parse(code, "<cell>", "exec")
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        return compile(tree, "<cell>", "exec"), None if last is None else compile(
            ast.Expression(last.value), "<cell>", "eval"
        )

    def outcome(compiler):
        env = {"__name__": "__main__"}
        try:
            body, last = compiler()
            exec(body, env)
            echoed = None if last is None else repr(eval(last, env))
        except Exception as exc:
            return type(exc).__name__, getattr(exc, "lineno", None)
        return echoed, sorted(
            (k, re.sub(" at 0x[0-9a-f]+", "", repr(v))) for k, v in env.items() if k != "__builtins__"
        )

    assert outcome(lambda: compile_cell(code, echo=True)) == outcome(by_ast)


def test_e2b_without_key_is_one_clear_error(monkeypatch):
    monkeypatch.delenv("E2B_API_KEY", raising=False)
    with pytest.raises(SandboxError, match="E2B_API_KEY is not set"):
        with open_sandbox(SandboxParams(backend="e2b")):
            pass


def test_session_uids_may_reach_the_highest_uid_and_not_past_it():
    from tracemill.errors import ParamsError
    from tracemill.sandbox.base import MAX_UID

    top = parse_section(SandboxParams, {"uid_base": MAX_UID - 9, "uid_range": 10}, "sandbox")  # uids up to MAX_UID
    assert top.uid_base + top.uid_range - 1 == MAX_UID
    with pytest.raises(ParamsError, match="highest session uid"):
        parse_section(SandboxParams, {"uid_base": MAX_UID - 8, "uid_range": 10}, "sandbox")
