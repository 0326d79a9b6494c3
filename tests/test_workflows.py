"""What no linter knows about the GitHub Actions workflows: that they call this
project's make targets, samconfig.toml's config envs, template.yaml's parameters and
the repository variables docs/DEPLOY.md documents, each deploy with its own stage's
role, boundary and artifact bucket. The rest (pinning, permissions, credentials
left in checkouts, caches, injection...) is zizmor's job: `make check-security`."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from typing import Any

import pytest
import yaml
from conftest import REPO

from local import gateway

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
ROLE_VARIABLE = re.compile(r"\$\{\{\s*vars\.AWS_DEPLOY_ROLE_ARN_(DEV|PROD)\s*\}\}")
STAGE_OF_ENV = {"default": "dev", "prod": "prod"}


def jobs() -> list[dict[str, Any]]:
    return [job for path in WORKFLOWS for job in yaml.safe_load(path.read_text(encoding="utf-8"))["jobs"].values()]


def scripts(job: dict[str, Any]) -> list[str]:
    """Each step's `run:`, backslash-continued lines joined."""
    return [step["run"].replace("\\\n", " ") for step in job.get("steps") or [] if "run" in step]


def deploys() -> list[tuple[str, dict[str, Any], str]]:
    """(config env, job, command) of every `sam deploy`."""
    found = []
    for job in jobs():
        for script in scripts(job):
            for command in re.findall(r"\bsam deploy\b[^\n]*", script):
                env = re.search(r"--config-env[\s=]+([\w-]+)", command)
                assert env, f"sam deploy without --config-env: {command}"
                found.append((env.group(1), job, command))
    return found


def overrides(command: str) -> dict[str, str]:
    """`--parameter-overrides "A=\\"x\\" B=\\"y\\""` -> {A: x, B: y}."""
    match = re.search(r'--parameter-overrides\s+"((?:[^"\\]|\\.)*)"', command)
    assert match, f"expected --parameter-overrides in one double-quoted string: {command}"
    return dict(re.findall(r'(\w+)=\\"([^"\\]*)\\"', match.group(1)))


@pytest.fixture(scope="module")
def samconfig() -> dict[str, Any]:
    return tomllib.loads((REPO / "samconfig.toml").read_text(encoding="utf-8"))


def test_every_make_target_a_workflow_runs_exists_and_ci_runs_every_check() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, flags=re.MULTILINE))
    used = {t for job in jobs() for s in scripts(job) for t in re.findall(r"(?:^|&&|;)\s*make\s+([a-z][\w-]*)", s)}
    assert used and used <= targets, f"not Makefile targets: {used - targets}"
    assert used >= {"lint", "typecheck", "check-security", "test", "validate", "build"}
    ci_run = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert set(re.findall(r"^make ([\w-]+)$", ci_run, flags=re.MULTILINE)) <= targets


def test_dev_deploys_from_main_and_prod_from_a_tag_in_the_production_environment(samconfig: dict[str, Any]) -> None:
    by_env = {env: job for env, job, _ in deploys()}
    assert set(by_env) == set(STAGE_OF_ENV) and set(by_env) <= set(samconfig)
    assert by_env["default"]["if"].replace(" ", "") == "github.ref=='refs/heads/main'"
    assert by_env["prod"]["if"].replace(" ", "") == "startsWith(github.ref,'refs/tags/v')"
    # Each role trusts exactly one OIDC subject: ref:refs/heads/main (no environment), or the environment.
    assert "environment" not in by_env["default"]
    assert by_env["prod"]["environment"] == {"name": "production"}


def test_each_deploy_assumes_its_own_stages_role_in_its_samconfig_region(samconfig: dict[str, Any]) -> None:
    for env, job, _ in deploys():
        (step,) = [
            s for s in job["steps"] if str(s.get("uses", "")).startswith("aws-actions/configure-aws-credentials@")
        ]
        match = ROLE_VARIABLE.fullmatch(step["with"]["role-to-assume"])
        assert match and match.group(1) == STAGE_OF_ENV[env].upper(), env
        assert step["with"]["aws-region"] == samconfig[env]["deploy"]["parameters"]["region"], env


def test_each_deploy_passes_template_parameters_from_its_stages_variables_and_forces_the_upload(
    samconfig: dict[str, Any],
) -> None:
    declared = set(
        yaml.load((REPO / "template.yaml").read_text(encoding="utf-8"), Loader=gateway.CfnLoader)["Parameters"]
    )
    for env, job, command in deploys():
        stage = STAGE_OF_ENV[env]
        passed = overrides(command)
        assert set(passed) <= declared, f"{env}: not parameters of template.yaml: {set(passed) - declared}"
        # --parameter-overrides replaces samconfig's parameter_overrides, so Stage is restated.
        assert f'Stage="{passed["Stage"]}"' == samconfig[env]["deploy"]["parameters"]["parameter_overrides"]
        assert passed["Stage"] == stage
        (step,) = [s for s in job["steps"] if "sam deploy" in s.get("run", "")]
        for parameter, value in passed.items():
            if parameter != "Stage":
                variable = value.strip("${}")
                assert step["env"][variable] == f"${{{{ vars.{stage.upper()}_{variable} }}}}", f"{env}: {parameter}"
        assert "${PERMISSIONS_BOUNDARY_ARN:?" in step["run"], f"{env}: never deployed without the boundary"
        # Every artifact is uploaded, never taken as already in the bucket because of its (checksum) name.
        assert "--force-upload" in command, env


def test_each_deploy_refuses_another_stages_boundary_before_building() -> None:
    for env, job, _ in deploys():
        stage = STAGE_OF_ENV[env]
        variable = f"{stage.upper()}_PERMISSIONS_BOUNDARY_ARN"
        steps = job["steps"]
        (check,) = [s for s in steps if variable in json.dumps(s.get("env")) and "sam deploy" not in s["run"]]
        assert steps.index(check) < next(i for i, s in enumerate(steps) if "make build" in s.get("run", ""))
        ((name, _),) = check["env"].items()

        def run(value: str, script: str = check["run"], name: str = name) -> subprocess.CompletedProcess[str]:
            env_vars = {"PATH": "/usr/bin:/bin", name: value}
            return subprocess.run(["bash", "-e", "-c", script], env=env_vars, capture_output=True, text=True)

        own = f"arn:aws:iam::123456789012:policy/whatsapp-ingest-{stage}-function-boundary"
        other = own.replace(f"-{stage}-", "-prod-" if stage == "dev" else "-dev-")
        assert run(own).returncode == 0, env
        for wrong in ("", other, "arn:aws:iam::aws:policy/AdministratorAccess"):
            failed = run(wrong)
            assert failed.returncode != 0 and variable in failed.stdout + failed.stderr, f"{env}: {wrong!r}"


def test_every_repository_variable_the_workflows_read_is_documented_in_deploy_md() -> None:
    used = {v for path in WORKFLOWS for v in re.findall(r"vars\.([A-Z0-9_]+)", path.read_text(encoding="utf-8"))}
    doc = (REPO / "docs" / "DEPLOY.md").read_text(encoding="utf-8")
    assert used and sorted(v for v in used if v not in doc) == []


def auth_secret_examples() -> list[dict[str, Any]]:
    """The JSON of every `--secret-string` that DEPLOY.md stores in a whatsapp-ingest/<stage>/auth secret."""
    doc = (REPO / "docs" / "DEPLOY.md").read_text(encoding="utf-8")
    commands = re.findall(r"--name whatsapp-ingest/\w+/auth\b.*?--secret-string '([^']*)'", doc, flags=re.DOTALL)
    return [json.loads(c) for c in commands]


def test_deploy_md_shows_an_auth_secret_with_tokens_only_and_one_with_a_signing_key() -> None:
    examples = auth_secret_examples()
    assert sorted(sorted(e) for e in examples) == [["signing_key", "tokens"], ["tokens"]]
    for example in examples:
        assert isinstance(example["tokens"], list) and example["tokens"]
        assert all(isinstance(token, str) for token in example["tokens"])
        # Pasted as is, a placeholder such as "<optional>" would turn signing on.
        assert "optional" not in str(example.get("signing_key", "")).lower()
    doc = (REPO / "docs" / "DEPLOY.md").read_text(encoding="utf-8")
    assert "at least 16 characters" in doc
