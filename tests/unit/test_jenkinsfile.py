"""The Jenkinsfile as Jenkins reads it, and the post-build step it ends with.

The Jenkinsfile is parsed, not searched: comments are stripped first (so a comment that
mentions a stage or a script proves nothing), then the blocks (``name(args) { ... }``)
are matched brace by brace, strings skipped. The stages, their order, the script each
stage's ``sh`` steps run, the Deploy stage's condition and credentials, and the
environment each stage sees are read from that tree.

Then scripts/post_build runs for real: the script, byte for byte, in a scratch checkout
whose ``.venv/bin/cdpipe`` (where post_build calls it) is a stub that records its
arguments and environment, with the environment Jenkins gives the Deploy stage.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from cdpipe import PROJECT_ROOT, secret_files
from devkit import git, git_init

JENKINSFILE = (PROJECT_ROOT / "Jenkinsfile").read_text(encoding="utf-8")
STAGES = ["Build", "Test", "Analysis", "Deploy"]
STAGE_SCRIPTS = {"Build": ["scripts/ci_build"], "Test": ["scripts/ci_test"],
                 "Analysis": ["scripts/ci_analysis"], "Deploy": ["scripts/post_build"]}
SHA = "3d41e6d" + "5" * 33


# --- a small reader of declarative pipelines -------------------------------------------

def _string_end(text: str, i: int) -> int:
    """The index after the Groovy string literal starting at text[i]."""
    quote = text[i:i + 3] if text[i:i + 3] in ("'''", '"""') else text[i]
    j = i + len(quote)
    while j < len(text):
        if text[j] == "\\":
            j += 2
        elif text.startswith(quote, j):
            return j + len(quote)
        else:
            j += 1
    raise ValueError(f"unterminated string at offset {i}")


def strip_comments(text: str) -> str:
    """The text without // and /* */ comments (strings kept whole; newlines kept)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] in "'\"":
            end = _string_end(text, i)
            out.append(text[i:end])
            i = end
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise ValueError(f"unterminated comment at offset {i}")
            out.append("\n" * text.count("\n", i, end))
            i = end + 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


# The head of a block: a name, maybe arguments in parentheses, right before its brace.
_HEAD = re.compile(r"(\w+)\s*(?:\((.*)\))?\s*\Z", re.DOTALL)


@dataclass
class Block:
    name: str
    args: str  # between the parentheses, "" without
    body: str  # between the braces

    @property
    def children(self) -> list[Block]:
        return blocks(self.body)

    def child(self, name: str) -> Block:
        found = [b for b in self.children if b.name == name]
        assert len(found) == 1, f"{self.name}: {len(found)} blocks named {name!r}"
        return found[0]

    def has(self, name: str) -> bool:
        return any(b.name == name for b in self.children)

    def walk(self) -> list[Block]:
        """This block and every block inside it, depth first."""
        return [self] + [d for c in self.children for d in c.walk()]


def blocks(text: str) -> list[Block]:
    """The blocks at the top level of ``text`` (comments already stripped)."""
    found: list[Block] = []
    depth, opened, last_end, i = 0, 0, 0, 0
    while i < len(text):
        c = text[i]
        if c in "'\"":
            i = _string_end(text, i)
            continue
        if c == "{":
            if depth == 0:
                opened = i
            depth += 1
        elif c == "}":
            depth -= 1
            assert depth >= 0, f"unbalanced '}}' at offset {i}"
            if depth == 0:
                head = _HEAD.search(text[last_end:opened])
                assert head, f"a block without a name: {text[last_end:opened]!r}"
                found.append(Block(head[1], (head[2] or "").strip(), text[opened + 1:i]))
                last_end = i + 1
        i += 1
    assert depth == 0, "unbalanced '{'"
    return found


def sh_steps(block: Block) -> list[str]:
    """The commands of the ``sh`` steps anywhere in a block, in order."""
    return [m[2] for m in re.finditer(
        r"""\bsh\s*\(?\s*(?:script\s*:\s*)?(['"])(.*?)\1""", block.body, re.DOTALL)]


def assignments(block: Block) -> dict[str, str]:
    """``NAME = 'value'`` lines of an ``environment`` block."""
    return dict(re.findall(r"""^\s*(\w+)\s*=\s*['"]([^'"]*)['"]\s*$""", block.body,
                           re.MULTILINE))


CODE = strip_comments(JENKINSFILE)
TOP = blocks(CODE)
PIPELINE = TOP[0]


def stages() -> list[Block]:
    found = PIPELINE.child("stages").children
    assert all(s.name == "stage" for s in found)
    return found


def stage(name: str) -> Block:
    return next(s for s in stages() if s.args == f"'{name}'")


def stage_environment(name: str) -> dict[str, str]:
    """The variables Jenkins sets for a stage: the pipeline's environment block, then
    the stage's own."""
    env: dict[str, str] = {}
    for holder in (PIPELINE, stage(name)):
        if holder.has("environment"):
            env |= assignments(holder.child("environment"))
    return env


# --- the reader itself ------------------------------------------------------------------

def test_the_reader_ignores_comments_and_strings() -> None:
    text = strip_comments("""\
// stage('Commented') { steps { sh 'scripts/nothing' } }
/* stage('Block') {
   sh 'scripts/nothing' } */
outer {
    stage('Real') { steps { sh 'echo "}" // not a comment' } }  // trailing
    stage("Two") { steps { sh(script: 'scripts/two') } }
}
""")
    assert "Commented" not in text and "Block" not in text and "trailing" not in text
    (outer,) = blocks(text)
    assert [(b.name, b.args) for b in outer.children] == [("stage", "'Real'"),
                                                          ("stage", '"Two"')]
    assert [sh_steps(b) for b in outer.children] == [['echo "}" // not a comment'],
                                                     ["scripts/two"]]


# --- the Jenkinsfile --------------------------------------------------------------------

def test_one_declarative_pipeline() -> None:
    assert [b.name for b in TOP] == ["pipeline"]
    assert [b.name for b in PIPELINE.children] == [
        "triggers", "options", "environment", "stages", "post"]
    assert re.search(r"^\s*agent\s+any\s*$", PIPELINE.body, re.MULTILINE)
    triggers = PIPELINE.child("triggers").body
    assert re.search(r"^\s*githubPush\(\)\s*$", triggers, re.MULTILINE)
    assert re.search(r"""^\s*pollSCM\('H/5 \* \* \* \*'\)\s*$""", triggers, re.MULTILINE)


def test_the_stages_in_order() -> None:
    assert [s.args for s in stages()] == [f"'{name}'" for name in STAGES]


@pytest.mark.parametrize("name", STAGES)
def test_each_stage_runs_its_script(name: str) -> None:
    s = stage(name)
    assert sh_steps(s) == STAGE_SCRIPTS[name]
    assert sh_steps(s.child("steps")) == STAGE_SCRIPTS[name]  # in its steps, not its post


def test_no_other_sh_step_anywhere() -> None:
    assert sh_steps(PIPELINE) == [script for name in STAGES for script in STAGE_SCRIPTS[name]]


@pytest.mark.parametrize("script", [s for scripts in STAGE_SCRIPTS.values() for s in scripts])
def test_every_script_exists_and_runs(script: str) -> None:
    path = PROJECT_ROOT / script
    assert path.is_file() and path.stat().st_mode & 0o111, f"{script} is not executable"
    assert subprocess.run(["bash", "-n", str(path)], check=False).returncode == 0
    out = subprocess.run([str(path), "--help"], capture_output=True, text=True, check=False,
                         timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("usage:"), script


def test_reports_are_published_where_the_scripts_write_them() -> None:
    junit = stage("Test").child("post").child("always").body
    assert re.search(r"""\bjunit\s+testResults:\s*'reports/junit\.xml'""", junit)
    ci_test = strip_comments((PROJECT_ROOT / "scripts/ci_test").read_text())
    assert "--junitxml=reports/junit.xml" in ci_test.replace("\\\n", " ")
    coverage = stage("Analysis").child("post").child("always").body
    assert "pattern: 'reports/coverage.xml'" in coverage
    assert "coverage xml -o reports/coverage.xml" in (PROJECT_ROOT / "scripts/ci_analysis"
                                                      ).read_text()


def test_deploy_only_on_main_after_green_stages() -> None:
    deploy = stage("Deploy")
    when = deploy.child("when")
    assert [b.name for b in when.children] == ["allOf"]
    all_of = when.child("allOf")
    assert re.search(r"^\s*branch\s+'main'\s*$", all_of.body, re.MULTILINE)
    assert all_of.child("expression").body.strip() == (
        "currentBuild.currentResult == 'SUCCESS'")
    for name in STAGES[:-1]:
        assert not stage(name).has("when"), f"{name} must always run"


CREDENTIALS = {  # credential id -> the variables post_build and cdpipe read
    "cdpipe-aws": [],  # AmazonWebServicesCredentialsBinding: AWS_ACCESS_KEY_ID, ...
    "cdpipe-ssh": ["CDPIPE_AWS_PRIVATE_KEY_FILE"],
    "cdpipe-redis-admin-password": ["CDPIPE_REDIS_ADMIN_PASSWORD"],
    "cdpipe-redis-operator-password": ["CDPIPE_REDIS_OPERATOR_PASSWORD"],
    "cdpipe-redis-deployer-password": ["CDPIPE_REDIS_DEPLOYER_PASSWORD"],
    "cdpipe-redis-controller-password": ["CDPIPE_REDIS_CONTROLLER_PASSWORD"],
    "cdpipe-redis-monitor-password": ["CDPIPE_REDIS_MONITOR_PASSWORD"],
    "cdpipe-redis-app-password": ["CDPIPE_REDIS_APP_PASSWORD"],
    "cdpipe-stats-password": ["CDPIPE_STATS_PASSWORD"],
    "cdpipe-proxy-cookie-key": ["CDPIPE_PROXY_COOKIE_KEY"],
    "cdpipe-app-user-id-secret": ["CDPIPE_APP_USER_ID_SECRET"],
    "cdpipe-smtp": ["CDPIPE_SMTP_USER", "CDPIPE_SMTP_PASSWORD"],
}


def bound_variables() -> list[str]:
    binding = stage("Deploy").child("steps").child("withCredentials")
    return re.findall(r"(?:\b[a-z]\w*Variable|\bvariable):\s*'(\w+)'", binding.args)


def test_deploy_binds_the_credentials_around_post_build() -> None:
    binding = stage("Deploy").child("steps").child("withCredentials")
    assert sh_steps(binding) == ["scripts/post_build"]
    ids = re.findall(r"credentialsId:\s*'([\w-]+)'", binding.args)
    assert sorted(ids) == sorted(CREDENTIALS)
    assert "$class: 'AmazonWebServicesCredentialsBinding', credentialsId: 'cdpipe-aws'" in (
        binding.args)
    assert sorted(bound_variables()) == sorted(v for vs in CREDENTIALS.values() for v in vs)
    assert not re.search(r"AKIA[0-9A-Z]{16}", JENKINSFILE)  # no key in the repository


def test_deploy_binds_every_secret_cdpipe_keeps() -> None:
    """A secret left unbound would be generated anew in a wiped workspace."""
    kept = {f"CDPIPE_{name.upper()}" for name in secret_files.NAMES}
    assert kept <= set(bound_variables())


def test_the_environment_each_stage_sees() -> None:
    assert assignments(PIPELINE.child("environment")) == {"CI": "true"}
    # post_build reads CDPIPE_PROVIDER (local when unset): in Jenkins the deploy goes to aws,
    # to one fixed environment id (a wiped workspace finds it again), over private IPs.
    assert stage_environment("Deploy") == {
        "CI": "true", "CDPIPE_PROVIDER": "aws", "CDPIPE_AWS_ENVIRONMENT": "prod",
        "CDPIPE_AWS_ADDRESS": "private"}
    for name in STAGES[:-1]:
        assert not stage(name).has("environment"), f"{name} sets variables of its own"


def test_only_the_deploy_stage_sees_provider_aws() -> None:
    """The Test stage's end-to-end tests call `cdpipe up` without --provider: with
    CDPIPE_PROVIDER=aws from the pipeline they would go to EC2."""
    for name in STAGES[:-1]:
        assert "CDPIPE_PROVIDER" not in stage_environment(name), name
    assert stage_environment(STAGES[-1])["CDPIPE_PROVIDER"] == "aws"


def test_make_pipeline_runs_the_same_stages_in_order() -> None:
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    block = makefile[makefile.index("\npipeline:"):].split("\n\n")[0]
    assert re.findall(r"scripts/\w+", block) == [s for n in STAGES for s in STAGE_SCRIPTS[n]]
    assert "CDPIPE_PROVIDER=local scripts/post_build" in block


# --- scripts/post_build, run against a stub cdpipe --------------------------------------

STUB = f"""\
#!{sys.executable}
# A stand-in for .venv/bin/cdpipe: records each call, answers `status --json` with
# {{"up": <STUB_UP>}}, and exits with STUB_EXIT_<COMMAND> (default 0).
import json, os, sys
with open(os.environ["STUB_LOG"], "a", encoding="utf-8") as fh:
    fh.write(json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(),
                         "env": dict(os.environ)}}) + "\\n")
command = sys.argv[1]
if command == "status":
    print(json.dumps({{"up": os.environ.get("STUB_UP") == "1"}}))
sys.exit(int(os.environ.get("STUB_EXIT_" + command.upper(), "0")))
"""


@dataclass
class Checkout:
    root: Path
    log: Path

    def calls(self) -> list[dict[str, object]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def argvs(self) -> list[list[str]]:
        return [call["argv"] for call in self.calls()]  # type: ignore[misc]


@pytest.fixture
def checkout(tmp_path: Path) -> Checkout:
    """A scratch checkout with the real scripts/post_build and a stub .venv/bin/cdpipe
    (post_build goes to its checkout's root and runs .venv/bin/cdpipe from there)."""
    root = tmp_path / "workspace"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(PROJECT_ROOT / "scripts" / "post_build", root / "scripts" / "post_build")
    venv_bin = root / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "cdpipe").write_text(STUB, encoding="utf-8")
    (venv_bin / "cdpipe").chmod(0o755)
    (venv_bin / "python").symlink_to(sys.executable)
    (root / "README").write_text("scratch\n")
    git_init(root)
    return Checkout(root, tmp_path / "cdpipe-calls.jsonl")


def jenkins_env(checkout: Checkout, **extra: str) -> dict[str, str]:
    """What the Deploy stage's `sh` step gets: the agent's PATH and HOME, Jenkins' own
    variables, the pipeline's and stage's environment, the bound credentials."""
    env = {"PATH": os.environ["PATH"], "HOME": str(checkout.root.parent),
           "GIT_COMMIT": SHA, "BRANCH_NAME": "main", "BUILD_NUMBER": "42",
           "JOB_NAME": "cdpipe/main", "WORKSPACE": str(checkout.root),
           "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "example",
           **stage_environment("Deploy"),
           **{name: f"bound-{name.lower()}" for name in bound_variables()},
           "STUB_LOG": str(checkout.log)}
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def post_build(checkout: Checkout, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(checkout.root / "scripts" / "post_build")], env=env,
                          cwd=checkout.root.parent, capture_output=True, text=True,
                          check=False, timeout=60)


def test_post_build_deploys_the_commit_jenkins_names(checkout: Checkout) -> None:
    out = post_build(checkout, jenkins_env(checkout, STUB_UP="1"))
    assert out.returncode == 0, out.stderr
    assert checkout.argvs() == [["status", "--json"],
                                ["deploy", "--provider", "aws", "--ref", SHA]]
    assert out.stdout.strip() == f"post-build: deploying {SHA} to aws"
    deploy = checkout.calls()[1]
    assert deploy["cwd"] == str(checkout.root)  # run from the checkout's root
    env = deploy["env"]
    assert isinstance(env, dict)
    for name in bound_variables():  # the credentials reach cdpipe
        assert env[name] == f"bound-{name.lower()}"
    assert env["CDPIPE_PROVIDER"] == "aws"


def test_post_build_brings_the_environment_up_the_first_time(checkout: Checkout) -> None:
    out = post_build(checkout, jenkins_env(checkout, STUB_UP="0"))
    assert out.returncode == 0, out.stderr
    assert checkout.argvs() == [["status", "--json"], ["up", "--provider", "aws", "--ref", SHA]]
    assert f"no environment yet; bringing aws up at {SHA}" in out.stdout


@pytest.mark.parametrize(("up", "failing"), [("1", "DEPLOY"), ("0", "UP")])
def test_a_failing_cdpipe_fails_post_build(checkout: Checkout, up: str, failing: str) -> None:
    out = post_build(checkout, jenkins_env(checkout, STUB_UP=up, **{f"STUB_EXIT_{failing}": "7"}))
    assert out.returncode == 7
    # Nothing else is tried after the failure (no `up` after a failed deploy).
    assert [argv[0] for argv in checkout.argvs()] == ["status", failing.lower()]


def test_without_jenkins_it_deploys_head_to_local(checkout: Checkout) -> None:
    env = jenkins_env(checkout, STUB_UP="1")
    del env["GIT_COMMIT"], env["CDPIPE_PROVIDER"]
    out = post_build(checkout, env)
    assert out.returncode == 0, out.stderr
    head = git(checkout.root, "rev-parse", "HEAD")
    assert checkout.argvs()[-1] == ["deploy", "--provider", "local", "--ref", head]
