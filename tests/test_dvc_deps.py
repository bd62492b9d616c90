"""dvc.yaml's code deps are what each stage imports, and `dvc status` says so after a library edit."""

from __future__ import annotations

import json
from pathlib import Path
from textwrap import dedent

from conftest import ROOT, run
from typer.testing import CliRunner

from tracemill import pipeline_deps as D
from tracemill.cli import app

# The stages that build a grader (directly or through tracemill.runtime) and run model code in the sandbox.
GRADING_STAGES = {"bootstrap", "hint_infer", "rft", "rstar_search", "rl", "distill", "evaluate"}


def _drift(dvc_yaml: Path, params: Path = ROOT / "params.yaml", root: Path = ROOT) -> list[D.Drift]:
    return D.check(root, dvc_yaml, params)[2]


def test_dvc_yaml_lists_every_module_each_stage_imports():
    drift = _drift(ROOT / "dvc.yaml")
    assert not drift, "dvc.yaml's deps differ from the code — run 'tracemill deps --write':\n" + "\n".join(
        line for d in drift for line in d.lines()
    )


def test_every_stage_that_grades_depends_on_grading_and_sandbox():
    _, computed, _ = D.check(ROOT, ROOT / "dvc.yaml", ROOT / "params.yaml")
    by_stage = {sd.stage: sd.code for sd in computed}
    for stage in GRADING_STAGES:
        assert {"tracemill/grading", "tracemill/sandbox"} <= set(by_stage[stage]), stage
    assert "tracemill/train" in by_stage["sft_start0"] and "tracemill/rstar" in by_stage["rstar_ppm"]


def test_check_reports_a_dep_removed_from_dvc_yaml(tmp_path):
    text, computed, _ = D.check(ROOT, ROOT / "dvc.yaml", ROOT / "params.yaml")
    dvc_yaml = tmp_path / "dvc.yaml"
    dvc_yaml.write_text(D.rewrite(text, computed).replace("      - tracemill/grading\n", "", 1))  # bootstrap's
    drift = _drift(dvc_yaml)
    assert [(d.stage, d.missing, d.extra) for d in drift] == [("bootstrap", ("tracemill/grading",), ())]
    dvc_yaml.write_text(D.rewrite(dvc_yaml.read_text(), D.check(ROOT, dvc_yaml, ROOT / "params.yaml")[1]))
    assert _drift(dvc_yaml) == []


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(dedent(text))


MINI = {
    "stages/__init__.py": "",
    "stages/job.py": """\
        from tracemill import base


        def main():
            import importlib

            from tracemill.pkg import thing  # a lazy, function-local import
            importlib.import_module("tracemill.dyn")
        """,
    "stages/reg.py": "from tracemill import params as P\n\nP.validate({})\n",
    "tracemill/__init__.py": '"""mini"""\n',
    "tracemill/base.py": "X = 1\n",
    "tracemill/pkg/__init__.py": '_LAZY = {"f": "tracemill.pkg.lazy"}\n',
    "tracemill/pkg/thing.py": "Y = 1\n",
    "tracemill/pkg/lazy.py": "from tracemill import viasub\n",
    "tracemill/viasub.py": "Z = 1\n",
    "tracemill/dyn.py": 'CMD = ["python", "-m", "tracemill.worker"]\nCARD = "templates/card.md"\n',
    "tracemill/worker.py": "W = 1\n",
    "tracemill/templates/card.md": "# {name}\n",
    "tracemill/unused.py": "U = 1\n",
    "tracemill/params.py": 'SECTIONS = {"a": "tracemill.sect:A"}\n\n\ndef validate(p):\n    return p\n',
    "tracemill/sect.py": "class A: ...\n",
    "dvc.yaml": """\
        stages:
          job:
            cmd: python -m stages.job --flag
            deps:
              - stages/job.py
              - data/in   # the input folder
            params:
              - problems
            outs:
              - data/out
          reg:
            foreach: [1, 2]
            do:
              cmd: python -m stages.reg ${item}
              deps:
                - tracemill/unused.py
              outs:
                - data/reg${item}
        """,
    "params.yaml": """\
        problems:
          sources:
            - {name: a, path: seeds/a.jsonl}
            - {name: b, path: data/in/b.jsonl}
            - {name: c}
        """,
}


def test_closure_follows_local_imports_module_strings_packages_data_and_the_registry(tmp_path):
    _write(tmp_path, MINI)
    graph = D.Graph(tmp_path)
    assert graph.code_paths("stages.job") == [
        "stages/job.py",
        "tracemill/__init__.py",
        "tracemill/base.py",
        "tracemill/dyn.py",
        "tracemill/pkg",
        "tracemill/templates/card.md",
        "tracemill/viasub.py",
        "tracemill/worker.py",
    ]
    assert graph.code_paths("stages.reg") == [
        "stages/reg.py",
        "tracemill/__init__.py",
        "tracemill/params.py",
        "tracemill/sect.py",
    ]


def test_write_adds_code_and_params_paths_keeps_data_deps_and_drops_stale_entries(tmp_path):
    _write(tmp_path, MINI)
    runner = CliRunner()
    args = ["deps", "--dvc-yaml", str(tmp_path / "dvc.yaml"), "--params", str(tmp_path / "params.yaml")]
    before = runner.invoke(app, args)
    assert before.exit_code == 1
    assert "job: + seeds/a.jsonl" in before.output and "reg: - tracemill/unused.py" in before.output
    assert runner.invoke(app, [*args, "--write"]).exit_code == 0
    text = (tmp_path / "dvc.yaml").read_text()
    assert "      - seeds/a.jsonl  # params problems.sources[0].path\n      - data/in   # the input folder\n" in text
    assert "data/in/b.jsonl" not in text and "unused" not in text  # b is inside data/in, already a dep
    assert runner.invoke(app, args).exit_code == 0
    params = tmp_path / "params.yaml"  # a source removed from params: its generated dep goes too
    params.write_text(params.read_text().replace("seeds/a.jsonl", "data/in/a.jsonl"))
    assert [d.extra for d in _drift(tmp_path / "dvc.yaml", params, tmp_path)] == [("seeds/a.jsonl",)]


def test_a_path_argument_that_no_dep_or_output_declares_is_reported(tmp_path):
    cmd = "cmd: python -m stages.job in=data/in/b.jsonl out=data/out other=data/other n=3"
    _write(tmp_path, {**MINI, "dvc.yaml": MINI["dvc.yaml"].replace("cmd: python -m stages.job --flag", cmd)})
    by_stage = {d.stage: d for d in _drift(tmp_path / "dvc.yaml", tmp_path / "params.yaml", tmp_path)}
    assert by_stage["job"].undeclared == ("other=data/other",)  # in: under the data/in dep; out: an output; n: no path
    assert "job: argument other=data/other is neither a dep nor an output" in "\n".join(by_stage["job"].lines())
    args = ["deps", "--dvc-yaml", str(tmp_path / "dvc.yaml"), "--params", str(tmp_path / "params.yaml"), "--write"]
    assert CliRunner().invoke(app, args).exit_code == 1  # --write fixes code deps, not a stage's arguments


def _commit_every_stage(repo: Path) -> None:
    """Mark every stage as run, without running one: placeholder outputs, then `dvc commit -f`."""
    script = dedent("""\
        from pathlib import Path
        from dvc.repo import Repo

        repo = Repo(".")
        for stage in repo.index.stages:
            for out in stage.outs:
                path = Path(out.def_path)
                if path.suffix in (".json", ".csv"):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text("{}" if path.suffix == ".json" else "x\\n")
                else:
                    path.mkdir(parents=True, exist_ok=True)
                    (path / "placeholder").write_text("x")
        repo.commit(force=True)
        """)
    out = run(["python", "-c", script], cwd=repo)
    assert out.returncode == 0, out.stderr


def _stale_after_edit(repo: Path, rel: str) -> set[str]:
    path = repo / rel
    original = path.read_text()
    path.write_text(original + "\n# an edit\n")
    try:
        out = run(["dvc", "status", "--json"], cwd=repo)
        assert out.returncode == 0, out.stderr
        return {name.split("@")[0] for name in json.loads(out.stdout)}
    finally:
        path.write_text(original)


def test_dvc_status_lists_the_stages_whose_code_changed(repo_copy):
    _commit_every_stage(repo_copy)
    assert json.loads(run(["dvc", "status", "--json"], cwd=repo_copy).stdout) == {}
    assert GRADING_STAGES <= _stale_after_edit(repo_copy, "tracemill/grading/core.py")
    assert GRADING_STAGES <= _stale_after_edit(repo_copy, "tracemill/sandbox/local.py")
    assert _stale_after_edit(repo_copy, "tracemill/publish/build.py") == {"publish"}
