"""A small GitHub Actions runner for the tests: a workflow's jobs run here as GitHub runs them.

Each ``run`` step is a bash script with the files GitHub gives it (``GITHUB_OUTPUT``, ``GITHUB_ENV``,
``GITHUB_PATH``, ``GITHUB_STEP_SUMMARY``) and ``${{ }}`` expressions evaluated in the same contexts (github,
env, inputs, matrix, steps, needs, runner, vars); ``if:`` conditions, job outputs, ``needs``, matrices, the
repository's composite actions (``uses: ./.github/actions/X``) and the actions the latency workflow uses:
actions/checkout (a clone of a local repository, shallow unless fetch-depth is 0), actions/setup-python
(nothing to do: the machine's Python is on its PATH), actions/upload-artifact and download-artifact (folders of
a store), actions/cache (a folder store, saved at the end of the job on a miss). A ``container:`` job runs on
the machine given for it. Anything else is refused, so a workflow cannot use a feature the tests do not run.

A job runs on an :class:`Executor`: this machine (:class:`Local`) or the emulated arm64 board over ssh
(:class:`BoardExecutor`), whose files the runner reaches through the board's rootfs.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

import yaml

STATUS_FUNCTIONS = ("always", "success", "failure", "cancelled")
JOB_KEYS = {"runs-on", "needs", "if", "steps", "env", "outputs", "strategy", "timeout-minutes", "container",
            "concurrency", "permissions", "name"}
STEP_KEYS = {"name", "id", "if", "run", "shell", "env", "uses", "with", "timeout-minutes"}


class WorkflowError(Exception):
    """The workflow uses something this runner does not emulate, or is malformed."""


# ---------------------------------------------------------------- expressions

_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<op>==|!=|<=|>=|&&|\|\||[!<>().,\[\]])"
                    r"|(?P<name>[A-Za-z_][A-Za-z0-9_-]*))")


def _tokens(text: str) -> list[tuple[str, object]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise WorkflowError(f"cannot parse expression {text!r} at {text[pos:]!r}")
        pos = m.end()
        kind = m.lastgroup
        value = m.group(kind)
        if kind == "str":
            out.append(("lit", value[1:-1].replace("''", "'")))
        elif kind == "num":
            out.append(("lit", float(value) if "." in value else int(value)))
        elif kind == "name" and value in ("true", "false", "null"):
            out.append(("lit", {"true": True, "false": False, "null": None}[value]))
        else:
            out.append((kind, value))
    return out


def _truthy(value) -> bool:
    return value not in (None, False, 0, "") and value == value


def _lookup(obj, key):
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        folded = {str(k).casefold(): v for k, v in obj.items()}
        return folded.get(str(key).casefold())
    if isinstance(obj, list) and isinstance(key, int) and 0 <= key < len(obj):
        return obj[key]
    return None


def _equal(a, b) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.casefold() == b.casefold()
    return a == b


def to_string(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


class _Parser:
    """Recursive descent over GitHub's expression grammar: || < && < comparisons < ! < primary."""

    def __init__(self, text: str, contexts: dict, functions: dict):
        self.text, self.toks, self.i = text, _tokens(text), 0
        self.contexts, self.functions = contexts, functions

    def parse(self):
        value = self.either()
        if self.i != len(self.toks):
            raise WorkflowError(f"trailing input in expression {self.text!r}")
        return value

    def peek(self, *values):
        return self.i < len(self.toks) and self.toks[self.i][0] in ("op",) and self.toks[self.i][1] in values

    def take(self, value):
        if not self.peek(value):
            raise WorkflowError(f"expected {value!r} in expression {self.text!r}")
        self.i += 1

    def either(self):
        left = self.both()
        while self.peek("||"):
            self.i += 1
            right = self.both()
            left = left if _truthy(left) else right
        return left

    def both(self):
        left = self.compare()
        while self.peek("&&"):
            self.i += 1
            right = self.compare()
            left = right if _truthy(left) else left
        return left

    def compare(self):
        left = self.negation()
        if self.peek("==", "!=", "<", ">", "<=", ">="):
            op = self.toks[self.i][1]
            self.i += 1
            right = self.negation()
            if op in ("==", "!="):
                return _equal(left, right) == (op == "==")
            return {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[op]
        return left

    def negation(self):
        if self.peek("!"):
            self.i += 1
            return not _truthy(self.negation())
        return self.primary()

    def primary(self):
        if self.i >= len(self.toks):
            raise WorkflowError(f"unexpected end of expression {self.text!r}")
        kind, value = self.toks[self.i]
        self.i += 1
        if kind == "lit":
            result = value
        elif kind == "op" and value == "(":
            result = self.either()
            self.take(")")
        elif kind == "name" and self.peek("("):
            self.i += 1
            args = []
            while not self.peek(")"):
                args.append(self.either())
                if not self.peek(")"):
                    self.take(",")
            self.take(")")
            if value not in self.functions:
                raise WorkflowError(f"function {value}() is not emulated (expression {self.text!r})")
            result = self.functions[value](*args)
        elif kind == "name":
            if value not in self.contexts:
                raise WorkflowError(f"context {value!r} is not emulated (expression {self.text!r})")
            result = self.contexts[value]
        else:
            raise WorkflowError(f"unexpected {value!r} in expression {self.text!r}")
        while self.peek(".", "["):
            if self.peek("."):
                self.i += 1
                kind, name = self.toks[self.i]
                self.i += 1
                if kind != "name":
                    raise WorkflowError(f"bad property in expression {self.text!r}")
                result = _lookup(result, name)
            else:
                self.i += 1
                key = self.either()
                self.take("]")
                result = _lookup(result, key)
        return result


def _format(template: str, *args) -> str:
    return re.sub(r"\{(\d+)\}", lambda m: to_string(args[int(m.group(1))]), template)


_EMBEDDED = re.compile(r"\$\{\{(.*?)\}\}", re.S)
EMULATED_ACTIONS = ("actions/checkout", "actions/setup-python", "actions/upload-artifact", "actions/download-artifact",
                    "actions/cache")


def evaluate(expression: str, contexts: dict, failed: bool = False):
    """The value of one expression (without ``${{ }}``) in ``contexts``; ``failed``: a step has failed."""
    return _Parser(expression, contexts, WorkflowRun.functions({"failed": failed})).parse()


# ---------------------------------------------------------------- executors

class Executor:
    """Where a job's steps run; ``host(path)`` is a job path as this machine reaches it."""

    label = "machine"

    def __init__(self, root: Path, env: dict[str, str]):
        self.root = Path(root)
        self.env = dict(env)

    def job_root(self, name: str) -> str:
        """A fresh directory for one job (workspace, temp), as the job sees it."""
        path = self.root / f"{name}-{time.monotonic_ns()}"
        path.mkdir(parents=True)
        return str(path)

    def host(self, path: str) -> Path:
        return Path(path)

    def run(self, shell: list[str], script: str, env: dict[str, str], cwd: str, timeout: float) -> tuple[int, str]:
        proc = subprocess.run([*shell, script], env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout)
        return proc.returncode, proc.stdout


class Local(Executor):
    label = "this machine"


class BoardExecutor(Executor):
    """The emulated arm64 board: steps run in an ssh session, files live under the board's rootfs."""

    label = "the arm64 board"

    def __init__(self, board, rootfs: Path, env: dict[str, str], root: str = "/tmp/actions-runner"):
        super().__init__(Path(root), env)
        self.board, self.rootfs = board, Path(rootfs)

    def job_root(self, name: str) -> str:
        path = f"{self.root}/{name}-{time.monotonic_ns()}"
        self.host(path).mkdir(parents=True)
        return path

    def host(self, path: str) -> Path:
        return self.rootfs / str(path).lstrip("/")

    def run(self, shell, script, env, cwd, timeout):
        command = f"cd {shlex.quote(cwd)} && exec env -i {shlex.join(f'{k}={v}' for k, v in env.items())} " \
                  f"{shlex.join([*shell, script])}"
        proc = subprocess.run(["ssh", "-F", self.board.ssh_config, "arm64-board", command], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
        return proc.returncode, proc.stdout


# ---------------------------------------------------------------- results

@dataclass
class StepResult:
    name: str
    outcome: str                      # success | failure | skipped
    outputs: dict = field(default_factory=dict)
    log: str = ""
    seconds: float = 0.0


@dataclass
class JobResult:
    job: str
    matrix: dict
    result: str                       # success | failure | skipped
    outputs: dict = field(default_factory=dict)
    steps: list[StepResult] = field(default_factory=list)
    summary: str = ""

    @property
    def log(self) -> str:
        return "\n".join(f"--- {s.name}: {s.outcome} ({s.seconds:.1f} s)\n{s.log}" for s in self.steps)

    @property
    def annotations(self) -> list[str]:
        return [line.strip() for s in self.steps for line in s.log.splitlines()
                if line.strip().startswith(("::error::", "::warning::"))]

    def step(self, name_part: str) -> StepResult:
        found = [s for s in self.steps if name_part in s.name]
        if len(found) != 1:
            raise KeyError(f"{len(found)} steps of {self.job} match {name_part!r}: {[s.name for s in self.steps]}")
        return found[0]


# ---------------------------------------------------------------- the runner

class WorkflowRun:
    """One run of a workflow for one event: ``run()`` executes its jobs in ``needs`` order."""

    def __init__(self, workflow: Path, repo: Path, store: Path, executors: dict[str, Executor], *,
                 event_name: str, event: dict, sha: str, ref: str = "refs/heads/main", vars: dict | None = None,
                 inputs: dict | None = None, env: dict | None = None, caches: Path | None = None,
                 actions: dict[str, Path] | None = None):
        """``store`` keeps this run's artifacts, ``caches`` (default: in ``store``) the caches, which outlive a run
        as on GitHub; ``env`` overrides values of the workflow's own ``env`` (settings a test makes smaller);
        ``actions`` maps ``OWNER/REPO`` of remote composite actions to local git repositories (cloned at the
        ``@REF`` into the job's folder, as GitHub downloads an action's repository)."""
        self.workflow_path = Path(workflow)
        self.doc = yaml.safe_load(self.workflow_path.read_text())
        unknown = set(env or {}) - set(self.doc.get("env") or {})
        if unknown:
            raise WorkflowError(f"the workflow has no env {sorted(unknown)} to override")
        self.doc["env"] = {**(self.doc.get("env") or {}), **(env or {})}
        self.repo, self.store = Path(repo), Path(store)
        self.executors = executors
        self.github = {"event_name": event_name, "event": event, "sha": sha, "ref": ref,
                       "repository": "topformer/topformer-deploy", "run_id": "1", "workflow": self.doc.get("name")}
        self.vars = vars or {}
        self.inputs = inputs or {}
        self.caches = Path(caches or self.store / "caches")
        self.actions = {k: Path(v) for k, v in (actions or {}).items()}
        (self.store / "artifacts").mkdir(parents=True, exist_ok=True)
        self.caches.mkdir(parents=True, exist_ok=True)

    def check(self, repo_root: Path) -> list[str]:
        """Problems this runner would meet, found without running anything: unknown keys, actions it does not
        emulate, a composite action's unknown or missing inputs, a script it calls that is missing."""
        problems = []

        def steps(where: str, items: list, composite: bool) -> None:
            for i, step in enumerate(items or []):
                name = f"{where} step {step.get('name') or step.get('uses') or i + 1}"
                problems.extend(f"{name}: key {k} is not emulated" for k in sorted(set(step) - STEP_KEYS))
                if "run" in step:
                    if composite and not step.get("shell"):
                        problems.append(f"{name}: a composite action's run step needs a shell")
                    for script in re.findall(r"scripts/ci/[\w.-]+", step["run"]):
                        if not any((root / script).is_file() for root in (repo_root, *self.actions.values())):
                            problems.append(f"{name}: {script} does not exist")
                elif step.get("uses", "").startswith("./"):
                    action(name, repo_root / step["uses"][2:], step.get("with") or {})
                elif self._remote(step.get("uses", "")):
                    repo, path, _ = self._remote(step["uses"])
                    action(name, self.actions[repo] / path, step.get("with") or {})
                elif step.get("uses", "").split("@")[0] not in EMULATED_ACTIONS:
                    problems.append(f"{name}: action {step.get('uses')} is not emulated")

        def action(where: str, folder: Path, args: dict) -> None:
            meta_file, path = folder / "action.yml", folder.name
            if not meta_file.is_file():
                problems.append(f"{where}: {meta_file} does not exist")
                return
            meta = yaml.safe_load(meta_file.read_text())
            declared = meta.get("inputs") or {}
            problems.extend(f"{where}: {path} has no input {k}" for k in sorted(set(args) - set(declared)))
            problems.extend(f"{where}: {path} needs input {k}" for k, spec in declared.items()
                            if (spec or {}).get("required") and k not in args)
            if (meta.get("runs") or {}).get("using") != "composite":
                problems.append(f"{path}: only composite actions are emulated")
            steps(path, (meta.get("runs") or {}).get("steps"), composite=True)

        for job_id, job in self.doc["jobs"].items():
            problems.extend(f"job {job_id}: key {k} is not emulated" for k in sorted(set(job) - JOB_KEYS))
            steps(f"job {job_id}", job.get("steps"), composite=False)
        return problems

    # -- jobs
    def run(self, only: list[str] | None = None, done: dict | None = None) -> dict[str, list[JobResult]]:
        """Run the jobs (those in ``only``), given the results of jobs run before in the same run (``done``)."""
        jobs = self.doc["jobs"]
        results: dict[str, list[JobResult]] = dict(done or {})
        for job_id in self._order(jobs):
            if only is not None and job_id not in only:
                continue
            results[job_id] = self._run_matrix(job_id, jobs[job_id], results)
        return {k: v for k, v in results.items() if k not in (done or {})}

    @staticmethod
    def _needs(job: dict) -> list[str]:
        needs = job.get("needs", [])
        return [needs] if isinstance(needs, str) else list(needs)

    def _order(self, jobs: dict) -> list[str]:
        done, order = set(), []
        while len(order) < len(jobs):
            ready = [j for j in jobs if j not in done and set(self._needs(jobs[j])) <= done]
            if not ready:
                raise WorkflowError(f"cyclic or unknown needs among {sorted(set(jobs) - done)}")
            for j in ready:
                done.add(j)
                order.append(j)
        return order

    def _run_matrix(self, job_id: str, job: dict, results: dict) -> list[JobResult]:
        unknown = set(job) - JOB_KEYS
        if unknown:
            raise WorkflowError(f"job {job_id}: keys {sorted(unknown)} are not emulated")
        matrix = (job.get("strategy") or {}).get("matrix") or {}
        if any(k in matrix for k in ("include", "exclude")):
            raise WorkflowError(f"job {job_id}: matrix include/exclude is not emulated")
        combos = [dict(zip(matrix, values)) for values in product(*matrix.values())] if matrix else [{}]
        return [self._run_job(job_id, job, combo, results) for combo in combos]

    def _needs_context(self, job: dict, results: dict) -> dict:
        context = {}
        for need in self._needs(job):
            runs = results.get(need, [])
            outputs = {}
            for r in runs:
                outputs.update(r.outputs)
            result = "success" if runs and all(r.result == "success" for r in runs) else (
                "skipped" if not runs or all(r.result == "skipped" for r in runs) else "failure")
            context[need] = {"result": result, "outputs": outputs}
        return context

    def _run_job(self, job_id: str, job: dict, matrix: dict, results: dict) -> JobResult:
        needs = self._needs_context(job, results)
        needs_ok = all(n["result"] == "success" for n in needs.values())
        base_ctx = {"github": self.github, "vars": self.vars, "inputs": self.inputs, "matrix": matrix, "needs": needs,
                    "env": {}, "steps": {}, "runner": {"os": "Linux", "arch": "X64", "temp": ""}, "secrets": {}}
        condition = job.get("if")
        state = {"failed": not needs_ok}
        if condition is None and not needs_ok:
            return JobResult(job_id, matrix, "skipped")
        if condition is not None and not _truthy(self._evaluate(condition, base_ctx, state)):
            return JobResult(job_id, matrix, "skipped")
        executor = self.executors.get(job_id) or self.executors["default"]
        root = executor.job_root(job_id + ("-" + "-".join(map(str, matrix.values())) if matrix else ""))
        workspace, temp = f"{root}/workspace", f"{root}/temp"
        executor.host(workspace).mkdir()
        executor.host(temp).mkdir()
        env = {**{k: to_string(v) for k, v in (self.doc.get("env") or {}).items()}}
        ctx = {**base_ctx, "runner": {"os": "Linux", "arch": "X64", "temp": temp}}
        ctx["github"] = {**self.github, "workspace": workspace, "job": job_id}
        ctx["env"] = env
        for k, v in (job.get("env") or {}).items():
            env[k] = to_string(self._interpolate(v, ctx, state))
        job_state = _JobState(executor, workspace, temp, env, paths=[], posts=[], summary=[], root=root)
        deadline = time.monotonic() + 60 * float(job.get("timeout-minutes", 360))
        steps: list[StepResult] = []
        self._run_steps(job.get("steps") or [], ctx, state, job_state, steps, deadline, prefix="", extra_env={})
        for post in job_state.posts:
            post()
        outputs = {k: to_string(self._interpolate(v, ctx, state)) for k, v in (job.get("outputs") or {}).items()}
        return JobResult(job_id, matrix, "failure" if state["failed"] else "success", outputs, steps,
                         "".join(job_state.summary))

    # -- steps
    def _run_steps(self, steps: list[dict], ctx: dict, state: dict, job: "_JobState", results: list[StepResult],
                   deadline: float, prefix: str, extra_env: dict) -> None:
        """Run ``steps`` (a job's, or a composite action's with ``extra_env`` from its uses step's env)."""
        ctx["steps"] = {}
        for index, step in enumerate(steps):
            unknown = set(step) - STEP_KEYS
            if unknown:
                raise WorkflowError(f"step {step.get('name', index)}: keys {sorted(unknown)} are not emulated")
            ctx["env"] = {**job.env, **extra_env}
            name = prefix + to_string(self._interpolate(step.get("name") or step.get("uses") or
                                                        f"run {index + 1}", ctx, state))
            condition = step.get("if", "success()")
            if not _truthy(self._evaluate(condition, ctx, state)):
                results.append(StepResult(name, "skipped"))
                self._record(ctx, step, "skipped", {})
                continue
            step_env = {**ctx["env"], **{k: to_string(self._interpolate(v, ctx, state))
                                         for k, v in (step.get("env") or {}).items()}}
            began = time.monotonic()
            try:
                if "run" in step:
                    result = self._run_script(name, step, ctx, state, job, step_env, deadline, prefix)
                else:
                    result = self._uses(name, step, ctx, state, job, step_env, results, deadline, prefix)
            except subprocess.TimeoutExpired:
                result = StepResult(name, "failure", log="timed out (timeout-minutes)")
            if result is not None:
                result.seconds = time.monotonic() - began
                results.append(result)
                outcome, outputs = result.outcome, result.outputs
            else:                        # a composite action recorded its own steps
                outcome, outputs = ("failure" if state["failed"] else "success"), state.pop("composite_outputs", {})
            if outcome == "failure":
                state["failed"] = True
            self._record(ctx, step, outcome, outputs)

    @staticmethod
    def _record(ctx: dict, step: dict, outcome: str, outputs: dict) -> None:
        if step.get("id"):
            ctx["steps"][step["id"]] = {"outcome": outcome, "conclusion": outcome, "outputs": outputs}

    def _github_env(self, job: "_JobState", step_env: dict, files: dict[str, str], ctx: dict) -> dict[str, str]:
        env = {**job.executor.env, **step_env}
        path = ":".join([*reversed(job.paths), env.get("PATH", "/usr/bin:/bin")])
        env.update({"PATH": path, "CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": job.workspace,
                    "RUNNER_TEMP": job.temp, "RUNNER_OS": "Linux", "GITHUB_SHA": self.github["sha"],
                    "GITHUB_EVENT_NAME": self.github["event_name"], "GITHUB_REF": self.github["ref"], **files})
        if ctx["github"].get("action_path"):
            env["GITHUB_ACTION_PATH"] = ctx["github"]["action_path"]
        return env

    def _run_script(self, name, step, ctx, state, job: "_JobState", step_env, deadline, prefix) -> StepResult:
        shell_name = step.get("shell")
        if prefix and not shell_name:
            raise WorkflowError(f"{name}: a composite action's run step needs a shell")
        shells = {None: ["bash", "-e"], "bash": ["bash", "--noprofile", "--norc", "-eo", "pipefail"]}
        if shell_name not in shells:
            raise WorkflowError(f"{name}: shell {shell_name!r} is not emulated")
        stamp = time.monotonic_ns()
        files = {key: f"{job.temp}/_{key.lower()}_{stamp}" for key in
                 ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_PATH", "GITHUB_STEP_SUMMARY")}
        for path in files.values():
            job.executor.host(path).write_text("")
        script = f"{job.temp}/_step_{stamp}.sh"
        job.executor.host(script).write_text(to_string(self._interpolate(step["run"], ctx, state)))
        env = self._github_env(job, step_env, files, ctx)
        code, log = job.executor.run(shells[shell_name], script, env, job.workspace,
                                     timeout=max(1.0, deadline - time.monotonic()))
        outputs = _parse_env_file(job.executor.host(files["GITHUB_OUTPUT"]).read_text())
        job.env.update(_parse_env_file(job.executor.host(files["GITHUB_ENV"]).read_text()))
        job.paths += [p for p in job.executor.host(files["GITHUB_PATH"]).read_text().splitlines() if p.strip()]
        job.summary.append(job.executor.host(files["GITHUB_STEP_SUMMARY"]).read_text())
        return StepResult(name, "success" if code == 0 else "failure", outputs, log + f"\n(exit {code})")

    def _uses(self, name, step, ctx, state, job: "_JobState", step_env, results, deadline, prefix):
        uses = step["uses"]
        args = {k: to_string(self._interpolate(v, ctx, state)) for k, v in (step.get("with") or {}).items()}
        if uses.startswith("./"):
            self._composite(name, uses, f"{job.workspace}/{uses[2:]}".rstrip("/"), args, ctx, state, job, step_env,
                            results, deadline)
            return None
        remote = self._remote(uses)
        if remote:
            repo, path, ref = remote
            folder = f"{job.root}/_actions/{repo}/{ref}"
            if not job.executor.host(folder).exists():
                self._clone(self.actions[repo], job.executor.host(folder), ref, depth=1)
            self._composite(name, uses, f"{folder}/{path}".rstrip("/"), args, ctx, state, job, step_env, results,
                            deadline)
            return None
        action = uses.split("@")[0]
        handler = dict(zip(EMULATED_ACTIONS, (self._checkout, self._setup_python, self._upload, self._download,
                                              self._cache))).get(action)
        if handler is None:
            raise WorkflowError(f"{name}: action {uses} is not emulated")
        try:
            outputs, log = handler(args, job)
        except ActionFailed as exc:
            return StepResult(name, "failure", log=str(exc))
        return StepResult(name, "success", outputs or {}, log)

    def _remote(self, uses: str) -> tuple[str, str, str] | None:
        """(OWNER/REPO, path in it, ref) of a remote action this run maps to a local repository, else None."""
        m = re.fullmatch(r"([^/@]+/[^/@]+)/?([^@]*)@(.+)", uses)
        return (m.group(1), m.group(2), m.group(3)) if m and m.group(1) in self.actions else None

    def _composite(self, name, uses, action_dir, args, ctx, state, job: "_JobState", step_env, results,
                   deadline) -> None:
        meta_file = job.executor.host(action_dir) / "action.yml"
        if not meta_file.is_file():
            raise WorkflowError(f"{name}: {meta_file} does not exist (check out the repository first)")
        meta = yaml.safe_load(meta_file.read_text())
        if (meta.get("runs") or {}).get("using") != "composite":
            raise WorkflowError(f"{uses}: only composite actions are emulated")
        declared = meta.get("inputs") or {}
        unknown = set(args) - set(declared)
        if unknown:
            raise WorkflowError(f"{uses}: unknown inputs {sorted(unknown)}")
        inputs = {}
        for key, spec in declared.items():
            spec = spec or {}
            if key in args:
                inputs[key] = args[key]
            elif spec.get("required"):
                raise WorkflowError(f"{uses}: input {key} is required")
            else:
                inputs[key] = to_string(self._interpolate(spec.get("default", ""), ctx, state))
        inner = {**ctx, "inputs": inputs, "github": {**ctx["github"], "action_path": action_dir}, "steps": {}}
        own_env = {k: v for k, v in step_env.items() if job.env.get(k) != v}   # the uses step's env: for the action
        self._run_steps(meta["runs"].get("steps") or [], inner, state, job, results, deadline, prefix=f"{name} / ",
                        extra_env=own_env)
        state["composite_outputs"] = {k: to_string(self._interpolate((v or {}).get("value", ""), inner, state))
                                      for k, v in (meta.get("outputs") or {}).items()}

    # -- the emulated actions
    def _checkout(self, args, job: "_JobState"):
        unknown = set(args) - {"ref", "fetch-depth"}
        if unknown:
            raise WorkflowError(f"actions/checkout: inputs {sorted(unknown)} are not emulated")
        ref = args.get("ref") or self.github["sha"]
        depth = int(args.get("fetch-depth") or 1)
        self._clone(self.repo, job.executor.host(job.workspace), ref, depth)
        return {}, f"checked out {ref} (fetch-depth {depth})"

    @staticmethod
    def _clone(repo: Path, dest: Path, ref: str, depth: int) -> None:
        """``repo`` at ``ref`` into ``dest``: the whole history for depth 0, else the last ``depth`` commits."""
        clone = ["git", "clone", "-q", "--no-checkout"]
        if depth > 0:
            clone += ["--depth", str(depth), "--no-single-branch"]
        _git([*clone, f"file://{repo}", str(dest)], repo)
        if depth > 0:   # a shallow clone may lack the commit: fetch it by name or id, as actions/checkout does
            _git(["git", "-C", str(dest), "fetch", "-q", "--depth", str(depth), "origin", ref], repo)
            ref = "FETCH_HEAD"
        _git(["git", "-C", str(dest), "checkout", "-q", "--detach", ref], repo)

    @staticmethod
    def _setup_python(args, job):
        return {"python-version": args.get("python-version", "")}, "the machine's Python is on PATH"

    def _upload(self, args, job: "_JobState"):
        name = args["name"]
        dest = self.store / "artifacts" / name
        if dest.exists():
            raise ActionFailed(f"an artifact named {name} exists already (artifacts are immutable)")
        sources = [job.executor.host(p.strip()) for p in args["path"].splitlines() if p.strip()]
        present = [s for s in sources if s.exists()]
        if not present:
            if args.get("if-no-files-found", "warn") == "error":
                raise ActionFailed(f"no files at {args['path']}")
            return {}, f"::warning::no files at {args['path']}: nothing uploaded"
        dest.mkdir(parents=True)
        for src in present:
            if src.is_dir():
                shutil.copytree(src, dest, dirs_exist_ok=True, symlinks=True)
            else:
                shutil.copy2(src, dest / src.name)
        return {}, f"uploaded {name}"

    def _download(self, args, job: "_JobState"):
        src = self.store / "artifacts" / args["name"]
        if not src.is_dir():
            raise ActionFailed(f"no artifact named {args['name']}")
        dest = job.executor.host(args.get("path") or job.workspace)
        shutil.copytree(src, dest, dirs_exist_ok=True, symlinks=True)
        return {}, f"downloaded {args['name']}"

    def _cache(self, args, job: "_JobState"):
        key, path = args["key"], job.executor.host(args["path"].strip())
        if not key:
            raise ActionFailed("actions/cache: empty key")
        store = self.caches / re.sub(r"[^A-Za-z0-9._-]", "_", key)
        if store.is_dir():
            _link_tree(store, path)
            return {"cache-hit": "true"}, f"cache hit: {key}"

        def save():
            if path.exists() and not store.exists():
                _link_tree(path, store)
        job.posts.append(save)
        return {"cache-hit": "false"}, f"cache miss: {key} (saved at the end of the job)"

    # -- expressions
    @staticmethod
    def functions(state: dict) -> dict:
        return {"always": lambda: True, "success": lambda: not state["failed"], "failure": lambda: state["failed"],
                "cancelled": lambda: False, "format": _format,
                "contains": lambda a, b: (str(b).casefold() in str(a).casefold()) if isinstance(a, str)
                else any(_equal(x, b) for x in (a or [])),
                "startsWith": lambda a, b: to_string(a).casefold().startswith(to_string(b).casefold())}

    def _evaluate(self, condition, ctx: dict, state: dict):
        if isinstance(condition, bool):
            return condition
        text = str(condition).strip()
        m = re.fullmatch(r"\$\{\{(.*)\}\}", text, re.S)
        expr = m.group(1) if m else text
        if not any(re.search(rf"\b{f}\s*\(", expr) for f in STATUS_FUNCTIONS):
            expr = f"success() && ({expr})"          # GitHub's implicit success() in a condition
        return _Parser(expr, ctx, self.functions(state)).parse()

    def _interpolate(self, value, ctx: dict, state: dict):
        if not isinstance(value, str):
            return value
        return _EMBEDDED.sub(lambda m: to_string(_Parser(m.group(1), ctx, self.functions(state)).parse()), value)


class ActionFailed(Exception):
    """An emulated action failed (the step fails, as on GitHub)."""


@dataclass
class _JobState:
    executor: Executor
    workspace: str
    temp: str
    env: dict
    paths: list
    posts: list
    summary: list
    root: str = ""


def _parse_env_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines and KEY<<DELIMITER blocks, as in GITHUB_OUTPUT and GITHUB_ENV."""
    values, lines = {}, text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delimiter = line.split("<<", 1)
            body = []
            i += 1
            while i < len(lines) and lines[i] != delimiter:
                body.append(lines[i])
                i += 1
            values[key] = "\n".join(body)
        elif "=" in line:
            key, value = line.split("=", 1)
            values[key] = value
        i += 1
    return values


def _git(argv: list[str], repo: Path) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise ActionFailed(f"{shlex.join(argv)}: {proc.stderr.strip()}")


def _link_tree(src: Path, dest: Path) -> None:
    """Copy ``src`` into ``dest`` as hard links, adding only what ``dest`` lacks and never entering a mount
    point (the board's rootfs may have /proc and /dev mounted); symlinks are copied as links."""
    for directory, dirs, files in os.walk(src):
        here = Path(directory)
        dirs[:] = [d for d in dirs if not os.path.ismount(here / d)]
        target = dest / here.relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for name in files + [d for d in dirs if (here / d).is_symlink()]:
            s, d = here / name, target / name
            if d.exists() or d.is_symlink():
                continue
            if s.is_symlink():
                d.symlink_to(os.readlink(s))
            elif s.is_file():
                os.link(s, d)
