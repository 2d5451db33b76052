"""Every `sh` step of the Jenkinsfile names a script of scripts/ that exists and runs."""

from __future__ import annotations

import re
import subprocess

from cdpipe import PROJECT_ROOT

JENKINSFILE = (PROJECT_ROOT / "Jenkinsfile").read_text()


def sh_steps() -> list[str]:
    return re.findall(r"""\bsh\s+['"]([^'"]+)['"]""", JENKINSFILE)


def test_every_sh_step_is_a_script_that_runs() -> None:
    steps = sh_steps()
    assert steps == ["scripts/ci_build", "scripts/ci_test", "scripts/ci_analysis",
                     "scripts/post_build"]
    for step in steps:
        script = PROJECT_ROOT / step.split()[0]
        assert script.is_file(), step
        assert script.stat().st_mode & 0o111, f"{step} is not executable"
        assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
        out = subprocess.run([str(script), "--help"], capture_output=True, text=True,
                             check=False, timeout=30)
        assert out.returncode == 0 and out.stdout.startswith("usage:"), step


def test_deploy_only_on_main_after_green_stages_with_bound_credentials() -> None:
    deploy = JENKINSFILE[JENKINSFILE.index("stage('Deploy')"):]
    assert "branch 'main'" in deploy
    assert "currentBuild.currentResult == 'SUCCESS'" in deploy
    assert "withCredentials" in deploy and "AmazonWebServicesCredentialsBinding" in deploy
    assert JENKINSFILE.index("stage('Build')") < JENKINSFILE.index("stage('Test')") < \
        JENKINSFILE.index("stage('Analysis')") < JENKINSFILE.index("stage('Deploy')")
    assert "githubPush()" in JENKINSFILE and "pollSCM(" in JENKINSFILE
    assert "junit" in JENKINSFILE
    assert not re.search(r"AKIA[0-9A-Z]{16}", JENKINSFILE)  # no key in the repository


def test_post_build_deploys_the_commit_jenkins_names() -> None:
    text = (PROJECT_ROOT / "scripts" / "post_build").read_text()
    assert '--ref "$commit"' in text and 'GIT_COMMIT' in text


def test_make_pipeline_runs_the_same_stages_in_order() -> None:
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    block = makefile[makefile.index("pipeline:"):].split("\n\n")[0]
    order = re.findall(r"scripts/(\w+)", block)
    assert order == ["ci_build", "ci_test", "ci_analysis", "post_build"]
