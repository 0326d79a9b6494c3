"""The GitHub Actions workflows and the OIDC deploy roles agree with the project and
with the security rules: pinned actions, OIDC only where AWS is touched, no stored
keys, only commands, config envs and parameters that exist, and one deploy role per
stage that trusts one subject, reaches only its own stage and creates roles only
within its stage's permissions boundary.

cfn-lint checks deploy/github-oidc-role.yaml."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO

from local import gateway

WORKFLOWS_DIR = REPO / ".github" / "workflows"
WORKFLOW_PATHS = sorted(WORKFLOWS_DIR.glob("*.yml")) + sorted(WORKFLOWS_DIR.glob("*.yaml"))
OIDC_ROLE_TEMPLATE = REPO / "deploy" / "github-oidc-role.yaml"
VENV_BIN = Path(sys.executable).parent

SHA = re.compile(r"^[0-9a-f]{40}$")
#: The deploy role of each stage comes from its own repository variable (docs/DEPLOY.md).
ROLE_VARIABLE = re.compile(r"\$\{\{\s*vars\.(?P<name>AWS_DEPLOY_ROLE_ARN_(?P<stage>DEV|PROD))\s*\}\}")
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>[^\s#]+)\s*(?:#\s*(?P<comment>.*))?$")
CONFIGURE_AWS = "aws-actions/configure-aws-credentials"


def ids(path: Path) -> str:
    return path.name


def load_workflow(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    """The `on:` mapping (YAML 1.1 reads the bare key `on` as True)."""
    keys: dict[Any, Any] = workflow
    on = keys.get("on", keys.get(True))
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    assert isinstance(on, dict), f"unexpected `on:` {on!r}"
    return on


def jobs(workflow: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = workflow["jobs"]
    return result


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = job.get("steps") or []
    return result


def run_scripts(job: dict[str, Any]) -> list[str]:
    """Each step's `run:` with backslash-continued lines joined."""
    return [step["run"].replace("\\\n", " ") for step in steps(job) if "run" in step]


def all_jobs() -> list[tuple[Path, str, dict[str, Any]]]:
    return [(path, name, job) for path in WORKFLOW_PATHS for name, job in jobs(load_workflow(path)).items()]


def configures_aws(job: dict[str, Any]) -> bool:
    return any(str(step.get("uses", "")).startswith(CONFIGURE_AWS + "@") for step in steps(job))


def make_targets(script: str) -> list[str]:
    """The targets of every `make` command in a shell script (options and VAR=value skipped)."""
    targets = []
    for line in script.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens = list(lexer)
        for i, token in enumerate(tokens):
            if token != "make" or (i and tokens[i - 1] not in {";", "&&", "||", "|", "(", "then", "do"}):
                continue
            for arg in tokens[i + 1 :]:
                if arg in {";", "&&", "||", "|", ")", "&"}:
                    break
                if not arg.startswith("-") and "=" not in arg:
                    targets.append(arg)
    return targets


def sam_commands(script: str) -> list[str]:
    """Every `sam <subcommand> ...` line of a script (the venv's .venv/bin/sam included)."""
    return [m.group(0) for m in re.finditer(r"(?:^|[\s/])sam\s+[a-z][^\n]*", script)]


def config_env(command: str) -> str | None:
    match = re.search(r"--config-env[\s=]+([\w-]+)", command)
    return match.group(1) if match else None


def parameter_overrides(command: str) -> dict[str, str]:
    """`--parameter-overrides "A=\\"x\\" B=\\"y\\""` (as written in a run: block) -> {A: x, B: y}."""
    match = re.search(r'--parameter-overrides\s+"((?:[^"\\]|\\.)*)"', command)
    assert match, f"expected --parameter-overrides in one double-quoted string: {command}"
    return dict(re.findall(r'(\w+)=\\"([^"\\]*)\\"', match.group(1)))


def deploy_jobs() -> list[tuple[str, dict[str, Any], str, str]]:
    """(job name, job, config env, deploy command) for every job that runs sam deploy."""
    found = []
    for _path, name, job in all_jobs():
        for script in run_scripts(job):
            for command in sam_commands(script):
                if re.search(r"\bsam\s+deploy\b", command):
                    env = config_env(command)
                    assert env, f"{name}: sam deploy without --config-env: {command}"
                    found.append((name, job, env, command))
    return found


def environment_name(job: dict[str, Any]) -> str | None:
    environment = job.get("environment")
    if isinstance(environment, dict):
        return str(environment.get("name"))
    return environment


@pytest.fixture(scope="module")
def samconfig() -> dict[str, Any]:
    return tomllib.loads((REPO / "samconfig.toml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z0-9][\w.-]*)\s*:(?!=)", text, flags=re.MULTILINE))


def samconfig_stage(samconfig: dict[str, Any], env: str) -> str:
    overrides = samconfig[env]["deploy"]["parameters"]["parameter_overrides"]
    match = re.search(r'Stage="?(\w+)', overrides)
    assert match, f"samconfig [{env}] sets no Stage"
    return match.group(1)


# --- the workflow files -------------------------------------------------------------


def test_there_is_a_ci_and_a_deploy_workflow() -> None:
    assert {p.name for p in WORKFLOW_PATHS} >= {"ci.yml", "deploy.yml"}


@pytest.mark.parametrize("path", WORKFLOW_PATHS, ids=ids)
def test_every_workflow_parses_as_yaml_with_a_name_triggers_and_jobs(path: Path) -> None:
    workflow = load_workflow(path)
    assert workflow["name"]
    assert triggers(workflow)
    assert jobs(workflow)
    for name, job in jobs(workflow).items():
        assert "uses" in job or ("runs-on" in job and steps(job)), f"{name} neither calls a workflow nor runs steps"


@pytest.mark.parametrize("path", WORKFLOW_PATHS, ids=ids)
def test_every_third_party_action_is_pinned_to_a_full_commit_sha_with_its_version_in_a_comment(path: Path) -> None:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = USES_LINE.match(line)
        if not match or match.group("ref").startswith("./"):
            continue
        ref = match.group("ref")
        action, _, version = ref.partition("@")
        assert SHA.match(version), f"{path.name}:{number}: {action} is not pinned to a 40-hex commit SHA: {ref}"
        assert re.match(r"v\d+(\.\d+)*\b", match.group("comment") or ""), (
            f"{path.name}:{number}: {action}@{version[:7]} needs a `# vX.Y.Z` comment naming the version"
        )


def test_each_action_is_pinned_to_the_same_commit_everywhere() -> None:
    pins: dict[str, set[str]] = {}
    for path in WORKFLOW_PATHS:
        for line in path.read_text(encoding="utf-8").splitlines():
            match = USES_LINE.match(line)
            if match and not match.group("ref").startswith("./"):
                action, _, version = match.group("ref").partition("@")
                pins.setdefault(action, set()).add(version)
    assert {action: shas for action, shas in pins.items() if len(shas) > 1} == {}


def test_local_reusable_workflows_exist_and_accept_workflow_call() -> None:
    for path, name, job in all_jobs():
        if "uses" in job:
            assert job["uses"].startswith("./.github/workflows/"), f"{path.name} {name}: {job['uses']}"
            called = REPO / job["uses"]
            assert called.exists(), f"{path.name} {name} calls a missing workflow {job['uses']}"
            assert "workflow_call" in triggers(load_workflow(called))


@pytest.mark.parametrize("path", WORKFLOW_PATHS, ids=ids)
def test_every_workflow_grants_only_read_access_to_the_code_by_default(path: Path) -> None:
    assert load_workflow(path).get("permissions") == {"contents": "read"}


def test_only_jobs_that_configure_aws_credentials_may_request_an_oidc_token() -> None:
    for path, name, job in all_jobs():
        permissions = job.get("permissions") or {}
        assert isinstance(permissions, dict), f"{path.name} {name}: permissions must be a mapping"
        wants_token = permissions.get("id-token") == "write"
        assert wants_token == configures_aws(job), (
            f"{path.name} {name}: id-token: write {'without' if wants_token else 'missing for'} "
            "configure-aws-credentials"
        )
        if wants_token:
            assert permissions == {"id-token": "write", "contents": "read"}


def test_aws_credentials_come_only_from_an_oidc_role_never_from_stored_keys() -> None:
    for path in [*WORKFLOW_PATHS, REPO / "docs" / "DEPLOY.md"]:
        text = path.read_text(encoding="utf-8").lower()
        for forbidden in ("aws-access-key-id", "aws-secret-access-key", "aws_access_key_id", "aws_secret_access_key"):
            assert forbidden not in text, f"{path.name} mentions {forbidden}"
    configured = 0
    for path, name, job in all_jobs():
        for step in steps(job):
            if str(step.get("uses", "")).startswith(CONFIGURE_AWS + "@"):
                configured += 1
                inputs = step.get("with") or {}
                assert ROLE_VARIABLE.fullmatch(inputs["role-to-assume"]), (
                    f"{path.name} {name}: {inputs['role-to-assume']}"
                )
                assert inputs["aws-region"], f"{path.name} {name}: no aws-region"
                assert set(inputs) <= {"role-to-assume", "role-session-name", "aws-region", "role-duration-seconds"}
    assert configured, "no job configures AWS credentials"


@pytest.mark.parametrize("path", WORKFLOW_PATHS, ids=ids)
def test_checkout_never_leaves_the_github_token_in_the_working_copy(path: Path) -> None:
    for name, job in jobs(load_workflow(path)).items():
        for step in steps(job):
            if str(step.get("uses", "")).startswith("actions/checkout@"):
                assert (step.get("with") or {}).get("persist-credentials") is False, f"{path.name} {name}"


@pytest.mark.parametrize("path", WORKFLOW_PATHS, ids=ids)
def test_python_comes_from_the_projects_python_version_file(path: Path) -> None:
    for name, job in jobs(load_workflow(path)).items():
        for step in steps(job):
            if str(step.get("uses", "")).startswith("actions/setup-python@"):
                inputs = step.get("with") or {}
                assert inputs.get("python-version-file") == ".python-version", f"{path.name} {name}"
                assert "python-version" not in inputs
    assert (REPO / ".python-version").read_text().strip() == "3.13"


def test_every_make_target_a_workflow_runs_exists_in_the_makefile(makefile_targets: set[str]) -> None:
    used = {(path.name, target) for path, _, job in all_jobs() for s in run_scripts(job) for target in make_targets(s)}
    assert used, "no workflow runs a make target"
    missing = sorted(f"{name}: make {target}" for name, target in used if target not in makefile_targets)
    assert missing == [], f"not targets of the Makefile: {missing}"


def test_ci_runs_on_every_pull_request_and_push_and_can_be_called_by_the_deploy() -> None:
    on = triggers(load_workflow(WORKFLOWS_DIR / "ci.yml"))
    assert {"pull_request", "push", "workflow_call"} <= set(on)
    # No branch or path filters: every pull request and every push is checked.
    assert not (on["pull_request"] or {}) and not (on["push"] or {})


def test_ci_lints_type_checks_tests_validates_and_builds_through_make() -> None:
    ci = load_workflow(WORKFLOWS_DIR / "ci.yml")
    targets = {t for job in jobs(ci).values() for s in run_scripts(job) for t in make_targets(s)}
    assert targets >= {"lint", "typecheck", "test", "validate", "build"}
    assert not any(configures_aws(job) for job in jobs(ci).values()), "CI must never hold AWS credentials"


# --- the deploy workflow ------------------------------------------------------------


def test_deploys_run_on_pushes_to_main_and_on_version_tags_only() -> None:
    on = triggers(load_workflow(WORKFLOWS_DIR / "deploy.yml"))
    assert set(on) == {"push"}
    assert on["push"] == {"branches": ["main"], "tags": ["v*.*.*"]}


def test_every_sam_config_env_a_workflow_names_exists_in_samconfig(samconfig: dict[str, Any]) -> None:
    named = {
        (path.name, env)
        for path, _, job in all_jobs()
        for script in run_scripts(job)
        for command in sam_commands(script)
        if (env := config_env(command))
    }
    assert {env for _, env in named} >= {"default", "prod"}
    assert sorted(f"{name}: {env}" for name, env in named if env not in samconfig) == []


def test_dev_is_deployed_from_main_and_prod_from_a_version_tag() -> None:
    by_env = {env: (name, job) for name, job, env, _ in deploy_jobs()}
    assert set(by_env) == {"default", "prod"}
    assert by_env["default"][1]["if"].replace(" ", "") == "github.ref=='refs/heads/main'"
    assert by_env["prod"][1]["if"].replace(" ", "") == "startsWith(github.ref,'refs/tags/v')"


def test_every_deploy_confirms_nothing_and_accepts_an_empty_changeset() -> None:
    for name, _, _, command in deploy_jobs():
        assert "--no-confirm-changeset" in command, name
        assert "--no-fail-on-empty-changeset" in command, name


def test_the_prod_deploy_waits_in_the_production_environment_and_dev_in_none() -> None:
    for name, job, env, _ in deploy_jobs():
        if env == "prod":
            assert environment_name(job) == "production", f"{name} must run in the `production` environment"
        else:
            # Outside an environment the OIDC subject is ref:refs/heads/main, which the role trusts.
            assert environment_name(job) is None, f"{name} must not run in an environment"


def role_to_assume(job: dict[str, Any]) -> str:
    (step,) = [s for s in steps(job) if str(s.get("uses", "")).startswith(CONFIGURE_AWS + "@")]
    return str(step["with"]["role-to-assume"])


def test_each_deploy_assumes_its_own_stages_role_and_only_prod_runs_in_production(
    samconfig: dict[str, Any],
) -> None:
    # The roles enforce it (each trusts one OIDC subject); this keeps the workflow
    # pointing each job at the role that will accept it.
    seen = set()
    for name, job, env, _ in deploy_jobs():
        stage = samconfig_stage(samconfig, env)
        match = ROLE_VARIABLE.fullmatch(role_to_assume(job))
        assert match, f"{name}: {role_to_assume(job)}"
        assert match["stage"] == stage.upper(), f"{name} deploys {stage} with {match['name']}"
        if stage == "prod":
            assert environment_name(job) == "production", f"{name}: the prod role trusts only the environment"
        else:
            assert environment_name(job) is None, f"{name}: the dev role trusts only ref:refs/heads/main"
        seen.add(match["name"])
    assert seen == {"AWS_DEPLOY_ROLE_ARN_DEV", "AWS_DEPLOY_ROLE_ARN_PROD"}


def test_only_a_job_in_the_production_environment_mentions_the_prod_role() -> None:
    for path, name, job in all_jobs():
        if "AWS_DEPLOY_ROLE_ARN_PROD" in yaml.safe_dump(job):
            assert environment_name(job) == "production", f"{path.name} {name}"
    assert "AWS_DEPLOY_ROLE_ARN_PROD" not in (WORKFLOWS_DIR / "ci.yml").read_text(encoding="utf-8")


def test_each_deploy_checks_its_role_variable_before_building() -> None:
    for name, job, _, _ in deploy_jobs():
        variable = ROLE_VARIABLE.fullmatch(role_to_assume(job))
        assert variable, name
        (check,) = [s for s in steps(job) if variable["name"] in str((s.get("env") or {}).values())]
        (env_name,) = check["env"]
        assert f"${{{env_name}:?" in check["run"] and variable["name"] in check["run"], name
        assert steps(job).index(check) < next(i for i, s in enumerate(steps(job)) if "make build" in s.get("run", ""))


def test_each_stage_deploys_in_its_own_concurrency_group_and_is_never_cancelled() -> None:
    groups = []
    for name, job, _, _ in deploy_jobs():
        concurrency = job.get("concurrency")
        assert isinstance(concurrency, dict), f"{name} has no concurrency group"
        assert concurrency.get("cancel-in-progress") is False, f"{name}: a deploy must never be cancelled midway"
        assert "${{" not in str(concurrency["group"]), f"{name}: the group must be fixed per environment"
        groups.append(concurrency["group"])
    assert len(groups) == len(set(groups)) == 2


def test_every_deploy_waits_for_the_whole_ci_workflow() -> None:
    deploy = load_workflow(WORKFLOWS_DIR / "deploy.yml")
    ci_jobs = {name for name, job in jobs(deploy).items() if job.get("uses") == "./.github/workflows/ci.yml"}
    assert ci_jobs
    for name, job, _, _ in deploy_jobs():
        needs = job.get("needs") or []
        assert ci_jobs & set([needs] if isinstance(needs, str) else needs), f"{name} does not wait for CI"


def test_every_deploy_builds_first_and_gets_aws_credentials_only_after_building() -> None:
    for name, job, _, _ in deploy_jobs():
        kinds = []
        for step in steps(job):
            if str(step.get("uses", "")).startswith(CONFIGURE_AWS + "@"):
                kinds.append("credentials")
            elif "make build" in step.get("run", ""):
                kinds.append("build")
            elif re.search(r"\bsam\s+deploy\b", step.get("run", "")):
                kinds.append("deploy")
        assert kinds == ["build", "credentials", "deploy"], f"{name}: {kinds}"


def test_each_deploy_assumes_the_role_in_the_region_of_its_samconfig_env(samconfig: dict[str, Any]) -> None:
    for name, job, env, _ in deploy_jobs():
        (step,) = [s for s in steps(job) if str(s.get("uses", "")).startswith(CONFIGURE_AWS + "@")]
        assert step["with"]["aws-region"] == samconfig[env]["deploy"]["parameters"]["region"], name


def test_deploy_overrides_restate_the_stage_of_their_samconfig_env(samconfig: dict[str, Any]) -> None:
    # sam deploy's --parameter-overrides replaces samconfig's parameter_overrides
    # instead of merging with it (checked with SAM CLI 1.170), so Stage must be repeated.
    for name, _, env, command in deploy_jobs():
        assert parameter_overrides(command).get("Stage") == samconfig_stage(samconfig, env), name


def test_deploy_passes_the_supabase_url_the_secret_arns_the_alarm_topic_and_the_boundary_from_stage_variables() -> None:
    for name, job, env, command in deploy_jobs():
        overrides = parameter_overrides(command)
        assert set(overrides) == {
            "Stage",
            "SupabaseUrl",
            "AuthSecretArn",
            "DatabaseSecretArn",
            "AlarmTopicArn",
            "PermissionsBoundaryArn",
        }, name
        (deploy_step,) = [s for s in steps(job) if re.search(r"\bsam\s+deploy\b", s.get("run", ""))]
        step_env = deploy_step.get("env") or {}
        prefix = "DEV_" if env == "default" else "PROD_"
        for parameter, variable in {
            "SupabaseUrl": "SUPABASE_URL",
            "AuthSecretArn": "AUTH_SECRET_ARN",
            "DatabaseSecretArn": "DATABASE_SECRET_ARN",
            "AlarmTopicArn": "ALARM_TOPIC_ARN",
            "PermissionsBoundaryArn": "PERMISSIONS_BOUNDARY_ARN",
        }.items():
            assert overrides[parameter] == f"${{{variable}}}", f"{name}: {parameter}"
            assert step_env[variable] == f"${{{{ vars.{prefix}{variable} }}}}", f"{name}: {variable}"
        # Never deployed without it: the deploy role would refuse to create or change the stack's roles.
        assert "${PERMISSIONS_BOUNDARY_ARN:?" in deploy_step["run"], name


def run_check(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-e", "-c", script], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=30
    )


def test_each_deploy_checks_its_stages_permissions_boundary_variable_before_building(
    samconfig: dict[str, Any],
) -> None:
    seen = set()
    for name, job, env, _ in deploy_jobs():
        stage = samconfig_stage(samconfig, env)
        variable = f"{stage.upper()}_PERMISSIONS_BOUNDARY_ARN"
        (check,) = [
            s
            for s in steps(job)
            if variable in str((s.get("env") or {}).values()) and not re.search(r"\bsam\s+deploy\b", s["run"])
        ]
        ((env_name, value),) = check["env"].items()
        assert value == f"${{{{ vars.{variable} }}}}", name
        build = next(i for i, s in enumerate(steps(job)) if "make build" in s.get("run", ""))
        assert steps(job).index(check) < build, f"{name}: check {variable} before building"
        # Unset, or another stage's boundary: a clear failure. This stage's: on to the build.
        own, other = boundary_arn(stage), boundary_arn(next(s for s in STAGES if s != stage))
        assert run_check(check["run"], **{env_name: own}).returncode == 0, name
        for wrong in ("", other, "arn:aws:iam::aws:policy/AdministratorAccess"):
            failed = run_check(check["run"], **{env_name: wrong})
            assert failed.returncode != 0 and variable in failed.stdout + failed.stderr, f"{name}: {wrong!r}"
        seen.add(variable)
    assert seen == {"DEV_PERMISSIONS_BOUNDARY_ARN", "PROD_PERMISSIONS_BOUNDARY_ARN"}


def test_every_parameter_the_deploy_overrides_is_declared_in_template_yaml() -> None:
    template = yaml.load((REPO / "template.yaml").read_text(encoding="utf-8"), Loader=gateway.CfnLoader)
    declared = set(template["Parameters"])
    for name, _, _, command in deploy_jobs():
        assert sorted(set(parameter_overrides(command)) - declared) == [], f"{name}: not parameters of template.yaml"


def test_every_repository_variable_the_workflows_read_is_documented_in_deploy_md() -> None:
    used = {v for path in WORKFLOW_PATHS for v in re.findall(r"vars\.([A-Z0-9_]+)", path.read_text(encoding="utf-8"))}
    assert used
    doc = (REPO / "docs" / "DEPLOY.md").read_text(encoding="utf-8")
    assert sorted(v for v in used if v not in doc) == []


# --- the OIDC deploy roles ----------------------------------------------------------
#
# deploy/github-oidc-role.yaml is deployed once per stage. The tests resolve it as
# CloudFormation would for each Stage value (Ref, Sub, If, conditions) and check
# the resulting role: whom it trusts, and that it reaches this stage's resources
# (named from template.yaml) and never the other stage's.

STAGES = ("dev", "prod")
ACCOUNT = "123456789012"
REGION = "us-east-1"
PSEUDO_PARAMETERS = {
    "AWS::Partition": "aws",
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "a-stack",
}
GITHUB = {"GitHubOrg": "example-org", "GitHubRepo": "example-repo"}
SUBJECT = {
    "dev": "repo:example-org/example-repo:ref:refs/heads/main",
    "prod": "repo:example-org/example-repo:environment:production",
}
NO_VALUE = object()


class TaggedCfnLoader(yaml.SafeLoader):
    """Reads !Ref, !Sub, !If... as their long forms ({"Ref": x}, {"Fn::Sub": x}), so a template can be resolved."""


def _tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


TaggedCfnLoader.add_multi_constructor("!", _tagged)


def load_tagged(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(path.read_text(encoding="utf-8"), Loader=TaggedCfnLoader)
    return loaded


class Resolver:
    """The values CloudFormation would give a template's intrinsic functions, for given parameters.

    A parameter without a value or default, a resource reference or an attribute
    resolves to a placeholder such as <DeployRole.Arn>."""

    def __init__(self, template: dict[str, Any], parameters: dict[str, str]) -> None:
        self.template = template
        self.values = {
            name: str(parameters.get(name, spec.get("Default", f"<{name}>")))
            for name, spec in (template.get("Parameters") or {}).items()
        }
        unknown = set(parameters) - set(self.values)
        assert not unknown, f"not parameters of the template: {unknown}"

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.values:
            return self.values[name]
        if name in PSEUDO_PARAMETERS:
            return PSEUDO_PARAMETERS[name]
        assert name in self.template["Resources"], f"!Ref to nothing: {name}"
        resource = self.template["Resources"][name]
        properties = resource.get("Properties") or {}
        if resource["Type"] == "AWS::IAM::ManagedPolicy" and "ManagedPolicyName" in properties:
            # CloudFormation's Ref of a managed policy is its ARN.
            path = self.resolve(properties.get("Path", "/"))
            policy_name = self.resolve(properties["ManagedPolicyName"])
            return f"arn:{self.ref('AWS::Partition')}:iam::{self.ref('AWS::AccountId')}:policy{path}{policy_name}"
        return f"<{name}>"

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.template["Conditions"][name]))

    def sub(self, argument: str | list[Any]) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else (argument[0], argument[1])
        variables = {k: self.resolve(v) for k, v in variables.items()}

        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in variables:
                return str(variables[name])
            if "." in name and name.split(".")[0] in self.template["Resources"]:
                return f"<{name}>"
            return str(self.ref(name))

        return re.sub(r"\$\{(?!!)([^}]+)\}", value, text)

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self.resolve(item) for item in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, argument),) = node.items()
            functions = {
                "Ref": lambda a: self.ref(a),
                "Condition": lambda a: self.condition(a),
                "Fn::Sub": lambda a: self.sub(a),
                "Fn::If": lambda a: self.resolve(a[1] if self.condition(a[0]) else a[2]),
                "Fn::Equals": lambda a: self.resolve(a[0]) == self.resolve(a[1]),
                "Fn::Not": lambda a: not self.resolve(a[0]),
                "Fn::And": lambda a: all(self.resolve(c) for c in a),
                "Fn::Or": lambda a: any(self.resolve(c) for c in a),
                "Fn::GetAtt": lambda a: f"<{a[0]}.{a[1]}>",
                "Fn::Join": lambda a: str(a[0]).join(str(v) for v in self.resolve(a[1])),
                "Fn::Select": lambda a: self.resolve(a[1])[int(a[0])],
            }
            if key in functions:
                return functions[key](argument)
            if key.startswith("Fn::"):
                return f"<{key}>"  # one the tests do not evaluate: never matches a name
        return {k: v for k, v in ((k, self.resolve(v)) for k, v in node.items()) if v is not NO_VALUE}

    def resources(self) -> dict[str, dict[str, Any]]:
        """The resources that would exist, resolved."""
        return {
            name: self.resolve(resource)
            for name, resource in self.template["Resources"].items()
            if "Condition" not in resource or self.condition(resource["Condition"])
        }


def oidc_role_stack(stage: str, **parameters: str) -> dict[str, dict[str, Any]]:
    """The resources of the role stack for `stage`, as CloudFormation would create them."""
    return Resolver(load_tagged(OIDC_ROLE_TEMPLATE), {"Stage": stage, **GITHUB, **parameters}).resources()


def deploy_role(stage: str) -> dict[str, Any]:
    role: dict[str, Any] = oidc_role_stack(stage)["DeployRole"]["Properties"]
    return role


def role_statements(stage: str) -> list[dict[str, Any]]:
    return [s for policy in deploy_role(stage)["Policies"] for s in policy["PolicyDocument"]["Statement"]]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def iam_match(pattern: str, value: str) -> bool:
    """IAM's wildcard match: * any run of characters (/ and : included), ? one character."""
    return re.fullmatch(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", "."), value) is not None


def is_read_only(statement: dict[str, Any]) -> bool:
    return all(re.match(r"(Describe|List|Get|Validate)", a.split(":")[1]) for a in as_list(statement["Action"]))


def condition_arns(statement: dict[str, Any]) -> list[str]:
    return [
        arn
        for operator, keys in (statement.get("Condition") or {}).items()
        if operator.startswith("Arn")
        for values in keys.values()
        for arn in as_list(values)
    ]


def applies_to(action: str, arn: str) -> bool:
    """Whether IAM evaluates `action` against an ARN of this kind: only one of its own service,
    and an S3 object action never against a bucket, a bucket action never against an object."""
    service = arn.split(":")[2]
    if action.split(":")[0] != service:
        return False
    object_action = "Object" in action and "Bucket" not in action  # not s3:GetBucketObjectLockConfiguration
    return service != "s3" or object_action == ("/" in arn.split(":::", 1)[1])


@dataclass(frozen=True)
class Target:
    """Something a stage's sam deploy creates or changes, and the call that does it."""

    what: str
    action: str
    arn: str
    #: The ARN a condition sees (lambda:FunctionArn for an event source mapping,
    #: iam:PolicyARN for an attached policy), if any.
    context: str | None = None
    #: For a role: the permissions boundary the call sets or the role has (iam:PermissionsBoundary), if any.
    boundary: str | None = None


def boundary_condition_holds(statement: dict[str, Any], target: Target) -> bool:
    """The statement's iam:PermissionsBoundary conditions, if any, for the target's boundary.
    IAM: a missing key fails StringEquals and satisfies StringNotEquals."""
    for operator, keys in (statement.get("Condition") or {}).items():
        for key, values in keys.items():
            if key.lower() != "iam:permissionsboundary":
                continue
            assert operator in {"StringEquals", "StringNotEquals"}, f"{statement['Sid']}: {operator}"
            matches = target.boundary in as_list(values)
            if matches != (operator == "StringEquals"):
                return False
    return True


def reaches(statement: dict[str, Any], target: Target, *, any_action: bool = False) -> bool:
    """`statement` matches `target`: its call (with any_action: any call that applies to that
    kind of ARN), one of its resource patterns, and its ARN conditions, if any, for the context."""
    actions = [a for a in as_list(statement["Action"]) if applies_to(a, target.arn)]
    if not (actions if any_action else target.action in actions):
        return False
    if not any(iam_match(r, target.arn) for r in as_list(statement["Resource"])):
        return False
    if not boundary_condition_holds(statement, target):
        return False
    conditions = condition_arns(statement)
    # Other conditions (iam:PassedToService, aws:ResourceAccount...) say nothing about the stage.
    return any(iam_match(c, target.context or target.arn) for c in conditions) if conditions else True


def allows(statements: list[dict[str, Any]], target: Target) -> bool:
    """Some Allow statement grants the target's call and no Deny refuses it."""
    allowed = any(reaches(s, target) for s in statements if s["Effect"] == "Allow")
    return allowed and not any(reaches(s, target) for s in statements if s["Effect"] == "Deny")


#: The calls that create a role or change its permissions, other than attaching a managed policy.
BOUNDED_ROLE_WRITES = ("iam:CreateRole", "iam:PutRolePermissionsBoundary", "iam:PutRolePolicy", "iam:DeleteRolePolicy")
#: Every call that creates a role or changes its permissions: each needs the stage's boundary.
ROLE_WRITES = (*BOUNDED_ROLE_WRITES, "iam:AttachRolePolicy", "iam:DetachRolePolicy")
BASIC_EXECUTION = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"


def boundary_arn(stage: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:policy/whatsapp-ingest-{stage}-function-boundary"


def stage_targets(stage: str) -> list[Target]:
    """Everything the stage's sam deploy creates, named from template.yaml."""
    app = Resolver(load_tagged(REPO / "template.yaml"), {"Stage": stage})
    lam, sqs, logs, cw, cfn, sm = (
        f"arn:aws:{service}:{REGION}:{ACCOUNT}:"
        for service in ("lambda", "sqs", "logs", "cloudwatch", "cloudformation", "secretsmanager")
    )
    bucket = "arn:aws:s3:::aws-sam-cli-managed-default-samclisourcebucket-1a2b"
    found = [
        Target("stack", "cloudformation:ExecuteChangeSet", f"{cfn}stack/whatsapp-ingest-{stage}/1a2b"),
        Target("artifact", "s3:PutObject", f"{bucket}/whatsapp-ingest-{stage}/9f8e"),
        Target("auth secret", "secretsmanager:DescribeSecret", f"{sm}secret:whatsapp-ingest/{stage}/auth-AbC123"),
    ]
    for logical_id, resource in app.resources().items():
        kind, props = resource["Type"], resource.get("Properties") or {}
        if kind == "AWS::Serverless::Function":
            function = f"{lam}function:{props['FunctionName']}"
            role = f"arn:aws:iam::{ACCOUNT}:role/whatsapp-ingest-{stage}-{logical_id}Role-1A2B3C4D5E6F"
            # The deploy passes the stage's boundary (PermissionsBoundaryArn), so every role has it.
            boundary = boundary_arn(stage)
            found += [
                Target(logical_id, "lambda:CreateFunction", function),
                Target(logical_id, "lambda:PublishVersion", f"{function}:1"),
                Target(f"{logical_id} role", "iam:PassRole", role),
                *(Target(f"{logical_id} role", a, role, boundary=boundary) for a in BOUNDED_ROLE_WRITES),
                Target(f"{logical_id} role", "iam:AttachRolePolicy", role, context=BASIC_EXECUTION, boundary=boundary),
                Target(f"{logical_id} role", "iam:DetachRolePolicy", role, context=BASIC_EXECUTION, boundary=boundary),
            ]
            if any(event["Type"] == "SQS" for event in (props.get("Events") or {}).values()):
                mapping = f"{lam}event-source-mapping:0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
                for action in ("lambda:CreateEventSourceMapping", "lambda:DeleteEventSourceMapping"):
                    found.append(Target(f"{logical_id} queue mapping", action, mapping, context=function))
        elif kind == "AWS::Serverless::LayerVersion":
            found.append(Target(logical_id, "lambda:PublishLayerVersion", f"{lam}layer:{props['LayerName']}"))
            found.append(Target(logical_id, "lambda:DeleteLayerVersion", f"{lam}layer:{props['LayerName']}:3"))
        elif kind == "AWS::Serverless::HttpApi":
            found.append(Target(logical_id, "apigateway:POST", f"arn:aws:apigateway:{REGION}::/apis"))
            found.append(Target(logical_id, "apigateway:PATCH", f"arn:aws:apigateway:{REGION}::/apis/a1b2c3d4e5"))
        elif kind == "AWS::SQS::Queue":
            found.append(Target(logical_id, "sqs:CreateQueue", f"{sqs}{props['QueueName']}"))
        elif kind == "AWS::CloudWatch::Alarm":
            found.append(Target(logical_id, "cloudwatch:PutMetricAlarm", f"{cw}alarm:{props['AlarmName']}"))
        elif kind == "AWS::Logs::LogGroup":
            found.append(Target(logical_id, "logs:CreateLogGroup", f"{logs}log-group:{props['LogGroupName']}"))
            found.append(Target(logical_id, "logs:PutRetentionPolicy", f"{logs}log-group:{props['LogGroupName']}:*"))
    return found


#: Resource types the deploy role was written for (docs/DEPLOY.md: extend the role for a new one).
ROLE_COVERS = {
    "AWS::Serverless::HttpApi",
    "AWS::Serverless::LayerVersion",
    "AWS::Serverless::Function",
    "AWS::SQS::Queue",
    "AWS::CloudWatch::Alarm",
    "AWS::Logs::LogGroup",
}
#: The only statements that may reach the other stage's resources, because nothing in those
#: ARNs names a stage (see the role template's comments).
SHARED_STATEMENTS = {
    "CloudWatchAlarmsDescribe": "DescribeAlarms: read-only",
    "LambdaSqsEventSourceRead": "event source mappings by UUID: read and tag only",
    "ApiGatewayHttpApis": "HTTP API IDs are random: a known gap",
}


def test_the_role_template_is_deployed_per_stage_and_the_stage_must_be_chosen() -> None:
    parameters = load_tagged(OIDC_ROLE_TEMPLATE)["Parameters"]
    assert parameters["Stage"]["AllowedValues"] == list(STAGES)
    assert "Default" not in parameters["Stage"], "a forgotten Stage must fail, not deploy a dev role"
    assert {stage: deploy_role(stage)["RoleName"] for stage in STAGES} == {
        "dev": "github-actions-whatsapp-ingest-deploy-dev",
        "prod": "github-actions-whatsapp-ingest-deploy-prod",
    }


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_role_trusts_exactly_its_one_subject(stage: str) -> None:
    (trust,) = deploy_role(stage)["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Effect"] == "Allow"
    assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert trust["Principal"] == {
        "Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com"
    }
    # Exact match of one subject: no StringLike, no list, no wildcard, no tag subject.
    assert trust["Condition"] == {
        "StringEquals": {
            "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
            "token.actions.githubusercontent.com:sub": SUBJECT[stage],
        }
    }


def test_no_role_trusts_a_tag_and_each_stack_reports_its_subject() -> None:
    assert "refs/tags" not in OIDC_ROLE_TEMPLATE.read_text(encoding="utf-8")
    template = load_tagged(OIDC_ROLE_TEMPLATE)
    for stage in STAGES:
        outputs = Resolver(template, {"Stage": stage, **GITHUB}).resolve(template["Outputs"])
        assert outputs["TrustedSubject"]["Value"] == SUBJECT[stage]


@pytest.mark.parametrize("create", ["true", "false"])
def test_the_oidc_provider_is_created_only_when_asked(create: str) -> None:
    parameters = load_tagged(OIDC_ROLE_TEMPLATE)["Parameters"]
    assert parameters["CreateOidcProvider"]["AllowedValues"] == ["true", "false"]
    for stage in STAGES:
        stack = oidc_role_stack(stage, CreateOidcProvider=create)
        assert ("GitHubOidcProvider" in stack) == (create == "true")
        if create == "true":
            provider = stack["GitHubOidcProvider"]
            assert provider["Type"] == "AWS::IAM::OIDCProvider"
            assert provider["Properties"]["Url"] == "https://token.actions.githubusercontent.com"
            assert provider["Properties"]["ClientIdList"] == ["sts.amazonaws.com"]


def test_template_yaml_uses_only_resource_types_the_deploy_role_was_written_for() -> None:
    types = {r["Type"] for r in load_tagged(REPO / "template.yaml")["Resources"].values()}
    assert sorted(types - ROLE_COVERS) == [], "extend deploy/github-oidc-role.yaml, then this list"


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_role_can_deploy_everything_its_stack_creates(stage: str) -> None:
    statements = role_statements(stage)
    missing = [f"{t.what}: {t.action} {t.arn}" for t in stage_targets(stage) if not allows(statements, t)]
    assert missing == []


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_role_cannot_touch_the_other_stages_resources(stage: str) -> None:
    (other,) = set(STAGES) - {stage}
    for statement in role_statements(stage):
        if statement["Effect"] != "Allow" or (statement["Resource"] == "*" and not statement.get("Condition")):
            continue  # calls that take no ARN: read-only (test_each_stage_role_acts_only_on_this_projects_names)
        reached = sorted({f"{t.what}: {t.arn}" for t in stage_targets(other) if reaches(statement, t, any_action=True)})
        if statement["Sid"] in SHARED_STATEMENTS:
            continue
        assert reached == [], f"the {stage} role's {statement['Sid']} reaches {other}: {reached}"
    by_sid = {s["Sid"]: s for s in role_statements(stage)}
    assert is_read_only(by_sid["CloudWatchAlarmsDescribe"])
    # Changing or deleting a mapping is scoped by the function it feeds (LambdaSqsEventSourceChange).
    assert {a.split(":")[1] for a in by_sid["LambdaSqsEventSourceRead"]["Action"]} <= {
        "GetEventSourceMapping",
        "TagResource",
        "UntagResource",
        "ListTags",
    }


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_role_acts_only_on_this_projects_names(stage: str) -> None:
    s = stage
    # The shared ones: SAM's managed stack and bucket, the transform, HTTP APIs and
    # event source mappings (random IDs), alarms for DescribeAlarms (read-only).
    allowed_prefixes = {
        "cloudformation": (f":stack/whatsapp-ingest-{s}/", ":stack/aws-sam-cli-managed-default/", ":transform/"),
        "s3": (f":::aws-sam-cli-managed-default*/whatsapp-ingest-{s}/", ":::aws-sam-cli-managed-default"),
        "lambda": (f":function:whatsapp-*-{s}", f":layer:whatsapp-ingest-{s}", ":event-source-mapping:"),
        "iam": (
            f":role/whatsapp-ingest-{s}-",
            ":role/github-actions-whatsapp-ingest-deploy-",
            # Denied only (DenyChangingTheBoundaryPolicies): both stages' boundaries.
            *(f":policy/whatsapp-ingest-{each}-function-boundary" for each in STAGES),
        ),
        "logs": (":log-group:/aws/lambda/whatsapp-",),
        "sqs": (f":whatsapp-ingest-retry-{s}", f":whatsapp-ingest-retry-dlq-{s}"),
        "cloudwatch": (f":alarm:whatsapp-ingest-retry-dlq-not-empty-{s}", ":alarm:*"),
        "secretsmanager": (f":secret:whatsapp-ingest/{s}/",),
        "apigateway": ("::/apis", "::/tags/"),
    }
    for statement in role_statements(stage):
        services = {action.split(":")[0] for action in as_list(statement["Action"])}
        for resource in as_list(statement["Resource"]):
            if resource == "*":
                # On every resource: only reads (calls that take no ARN), or a write narrowed by a condition.
                assert is_read_only(statement) or statement.get("Condition"), f"{statement['Sid']} writes everywhere"
                continue
            assert resource.startswith("arn:aws:") and "<" not in resource, f"{statement['Sid']}: {resource}"
            for service in services:
                assert any(p in resource for p in allowed_prefixes[service]), f"{statement['Sid']}: {resource}"


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_role_can_describe_its_secrets_but_never_read_them(stage: str) -> None:
    statements = role_statements(stage)
    actions = [a.lower() for s in statements if s["Effect"] == "Allow" for a in as_list(s["Action"])]
    assert [a for a in actions if a.startswith("secretsmanager:")] == ["secretsmanager:describesecret"]
    # The one GetSecretValue in the template is the functions' boundary, which grants nothing by
    # itself, is attached to no one and can be attached by no one (test_the_boundary_is_...).
    text = OIDC_ROLE_TEMPLATE.read_text(encoding="utf-8").lower()
    assert text.count("secretsmanager:getsecretvalue") == 1
    (boundary,) = [r for r in oidc_role_stack(stage).values() if r["Type"] == "AWS::IAM::ManagedPolicy"]
    assert "secretsmanager:GetSecretValue" in json.dumps(boundary)


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_role_allows_no_wildcard_actions_and_cannot_delete_stacks(stage: str) -> None:
    for statement in role_statements(stage):
        for action in as_list(statement["Action"]):
            assert "*" not in action, f"{statement['Sid']}: {action}"
            assert action.lower() != "cloudformation:deletestack"


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_role_passes_roles_to_lambda_only_and_attaches_no_arbitrary_managed_policy(stage: str) -> None:
    by_sid = {s["Sid"]: s for s in role_statements(stage)}
    assert by_sid["IamPassStackRolesToLambda"]["Condition"] == {
        "StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}
    }
    attachable = by_sid["IamStackRoleManagedPolicies"]["Condition"]["ArnEquals"]["iam:PolicyARN"]
    assert all(":iam::aws:policy/" in arn for arn in attachable)
    assert not any("Administrator" in arn or "FullAccess" in arn for arn in attachable)


@pytest.mark.parametrize("stage", STAGES)
def test_no_deploy_role_can_edit_itself_or_the_other_stages_role(stage: str) -> None:
    prefix = load_tagged(OIDC_ROLE_TEMPLATE)["Parameters"]["RoleNamePrefix"]
    assert not prefix["Default"].startswith("whatsapp-ingest-")
    assert re.match(prefix["AllowedPattern"], "whatsapp-ingest-deploy") is None
    assert re.match(prefix["AllowedPattern"], prefix["Default"])
    statements = role_statements(stage)
    for target in STAGES:
        arn = f"arn:aws:iam::{ACCOUNT}:role/{deploy_role(target)['RoleName']}"
        for action in ("iam:PutRolePolicy", "iam:AttachRolePolicy", "iam:UpdateAssumeRolePolicy", "iam:DeleteRole"):
            assert not allows(statements, Target("deploy role", action, arn)), f"{stage} role may {action} {arn}"
        deny = [s for s in statements if s["Effect"] == "Deny" and arn in as_list(s["Resource"])]
        assert deny, f"{stage} role: no explicit deny on {arn}"
        assert {"iam:PutRolePolicy", "iam:AttachRolePolicy", "iam:UpdateAssumeRolePolicy"} <= set(deny[0]["Action"])


# --- the permissions boundary of the stack's roles ----------------------------------
#
# The deploy role must create its stack's roles and write their policies. Without a
# limit it could create a whatsapp-ingest-<stage>-* role with any policy, pass it to a
# function and act as that function: admin, and from there the other stage. So each
# stage has a boundary policy (what its functions need, nothing more), and the role may
# create or change a role's permissions only with that boundary.


def boundary_policy(stage: str) -> dict[str, Any]:
    (boundary,) = [r for r in oidc_role_stack(stage).values() if r["Type"] == "AWS::IAM::ManagedPolicy"]
    return boundary


def boundary_statements(stage: str) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = boundary_policy(stage)["Properties"]["PolicyDocument"]["Statement"]
    return statements


def function_needs(stage: str) -> list[Target]:
    """Every call the stage's functions make with their roles (template.yaml): their own
    policies, then what SAM's managed policies are there for: writing to the function's log
    group, and for an SQS event source, Lambda polling the queue. X-Ray is checked apart
    (its calls take no ARN)."""
    sm = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:whatsapp-ingest/{stage}"
    parameters = {"Stage": stage, "AuthSecretArn": f"{sm}/auth-AbC123", "DatabaseSecretArn": f"{sm}/database-DeF456"}
    resources = Resolver(load_tagged(REPO / "template.yaml"), parameters).resources()
    # What the Resolver leaves as placeholders: queue ARNs, log group names.
    known = {
        **{
            f"<{q}.Arn>": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{r['Properties']['QueueName']}"
            for q, r in resources.items()
            if r["Type"] == "AWS::SQS::Queue"
        },
        **{
            f"<{g}>": r["Properties"]["LogGroupName"]
            for g, r in resources.items()
            if r["Type"] == "AWS::Logs::LogGroup"
        },
    }
    needs = []
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        props = resource["Properties"]
        for policy in props.get("Policies") or []:
            for statement in policy["Statement"]:
                assert statement["Effect"] == "Allow", f"{logical_id}: {statement}"
                for action in as_list(statement["Action"]):
                    for arn in as_list(statement["Resource"]):
                        needs.append(Target(logical_id, action, known.get(arn, arn)))
        group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{known[props['LoggingConfig']['LogGroup']]}"
        needs += [
            Target(f"{logical_id} logs", "logs:CreateLogStream", f"{group}:log-stream:2025/01/01/[$LATEST]0a1b"),
            Target(f"{logical_id} logs", "logs:PutLogEvents", f"{group}:log-stream:2025/01/01/[$LATEST]0a1b"),
        ]
        for event in (props.get("Events") or {}).values():
            if event["Type"] == "SQS":
                queue = known[event["Properties"]["Queue"]]
                for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"):
                    needs.append(Target(f"{logical_id} queue", action, queue))
            else:
                assert event["Type"] == "HttpApi", f"{logical_id}: the boundary knows no {event['Type']} event"
    return needs


def test_every_role_the_app_stack_creates_gets_the_boundary_parameter() -> None:
    """The SAM transform of template.yaml, as CloudFormation runs it: every AWS::IAM::Role it
    creates (the four functions' roles; nothing else makes one) carries PermissionsBoundaryArn."""
    translator = pytest.importorskip("samtranslator.translator.translator")
    parser = pytest.importorskip("samtranslator.parser.parser")
    template = load_tagged(REPO / "template.yaml")
    for resource in template["Resources"].values():  # local paths: sam deploy uploads them to S3
        for key in ("CodeUri", "ContentUri"):
            if key in (resource.get("Properties") or {}):
                resource["Properties"][key] = "s3://bucket/key"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        transformed = translator.Translator({}, parser.Parser()).translate(
            template, parameter_values={"Stage": "dev", "PermissionsBoundaryArn": boundary_arn("dev")}
        )
    roles = {name: r for name, r in transformed["Resources"].items() if r["Type"] == "AWS::IAM::Role"}
    functions = [name for name, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"]
    assert sorted(roles) == sorted(f"{name}Role" for name in functions)
    for name, role in roles.items():
        assert role["Properties"].get("PermissionsBoundary") == {
            "Fn::If": ["HasPermissionsBoundary", {"Ref": "PermissionsBoundaryArn"}, {"Ref": "AWS::NoValue"}]
        }, name
    assert template["Conditions"]["HasPermissionsBoundary"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "PermissionsBoundaryArn"}, ""]}]
    }


def test_the_boundary_is_a_stage_policy_attached_to_no_one() -> None:
    for stage in STAGES:
        boundary = boundary_policy(stage)["Properties"]
        assert boundary["ManagedPolicyName"] == f"whatsapp-ingest-{stage}-function-boundary"
        # A boundary grants nothing by itself; attached as a permissions policy it would.
        assert not {"Roles", "Users", "Groups", "Path"} & set(boundary), stage
        outputs = Resolver(load_tagged(OIDC_ROLE_TEMPLATE), {"Stage": stage, **GITHUB}).resolve(
            load_tagged(OIDC_ROLE_TEMPLATE)["Outputs"]
        )
        assert outputs["FunctionBoundaryArn"]["Value"] == boundary_arn(stage)
        assert f"{stage.upper()}_PERMISSIONS_BOUNDARY_ARN" in outputs["FunctionBoundaryArn"]["Description"]


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_boundary_allows_what_its_functions_need_and_nothing_more(stage: str) -> None:
    statements = boundary_statements(stage)
    assert all(s["Effect"] == "Allow" and set(s) == {"Sid", "Effect", "Action", "Resource"} for s in statements)
    needs = function_needs(stage)
    assert [f"{t.what}: {t.action} {t.arn}" for t in needs if not allows(statements, t)] == []
    # Nothing more: no action the functions do not use...
    allowed = {a for s in statements for a in as_list(s["Action"])}
    xray = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}  # Tracing: Active
    assert allowed == {t.action for t in needs} | xray
    # ...and "*" only for X-Ray, whose calls take no ARN.
    for statement in statements:
        if "*" in as_list(statement["Resource"]):
            assert statement["Resource"] == "*" and set(as_list(statement["Action"])) == xray, statement["Sid"]


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_boundary_is_scoped_to_its_stage(stage: str) -> None:
    (other,) = set(STAGES) - {stage}
    statements = boundary_statements(stage)
    reached = [f"{t.what}: {t.action} {t.arn}" for t in function_needs(other) if allows(statements, t)]
    assert reached == [], f"the {stage} boundary lets a role reach {other}"
    for statement in statements:
        for resource in as_list(statement["Resource"]):
            if resource != "*":
                service = as_list(statement["Action"])[0].split(":")[0]
                assert resource.startswith(f"arn:aws:{service}:{REGION}:{ACCOUNT}:"), resource
                assert stage in resource and other not in resource, f"{statement['Sid']}: {resource}"


@pytest.mark.parametrize("stage", STAGES)
def test_every_role_write_of_each_deploy_role_requires_its_stages_boundary(stage: str) -> None:
    (other,) = set(STAGES) - {stage}
    statements = role_statements(stage)
    writes = {a.lower() for a in ROLE_WRITES}
    granted = set()
    for statement in statements:
        actions = {a.lower() for a in as_list(statement["Action"])} & writes
        if statement["Effect"] != "Allow" or not actions:
            continue
        granted |= actions
        # IAM's delegation pattern: the call must set, or the role already have, exactly this boundary.
        assert statement["Condition"]["StringEquals"]["iam:PermissionsBoundary"] == boundary_arn(stage), statement
        assert statement["Resource"] == f"arn:aws:iam::{ACCOUNT}:role/whatsapp-ingest-{stage}-*", statement["Sid"]
    assert granted == writes, "the deploy needs every one of them, with the boundary"
    # The escalation the boundary closes: a stage role without this boundary (none, the other
    # stage's, any other) can be neither created nor given a policy, nor given another boundary.
    role = f"arn:aws:iam::{ACCOUNT}:role/whatsapp-ingest-{stage}-Escalate"
    admin = "arn:aws:iam::aws:policy/AdministratorAccess"
    for action in ROLE_WRITES:
        context = BASIC_EXECUTION if "Attach" in action or "Detach" in action else None
        assert allows(statements, Target("role", action, role, context=context, boundary=boundary_arn(stage)))
        for boundary in (None, boundary_arn(other), admin):
            target = Target("role", action, role, context=context, boundary=boundary)
            assert not allows(statements, target), f"{stage} role may {action} with boundary {boundary}"


@pytest.mark.parametrize("stage", STAGES)
def test_each_deploy_role_can_neither_remove_a_boundary_nor_change_a_boundary_policy(stage: str) -> None:
    statements = role_statements(stage)
    role = f"arn:aws:iam::{ACCOUNT}:role/whatsapp-ingest-{stage}-ReplayFunctionRole-1A2B3C4D5E6F"
    remove = Target("role", "iam:DeleteRolePermissionsBoundary", role, boundary=boundary_arn(stage))
    (deny,) = [s for s in statements if s["Effect"] == "Deny" and reaches(s, remove)]
    assert "Condition" not in deny, "unconditional"
    edits = ("iam:CreatePolicyVersion", "iam:DeletePolicy", "iam:SetDefaultPolicyVersion", "iam:DeletePolicyVersion")
    for each in STAGES:
        (deny,) = [
            s
            for s in statements
            if s["Effect"] == "Deny" and boundary_arn(each) in as_list(s["Resource"]) and "Condition" not in s
        ]
        assert set(edits) <= set(deny["Action"]), f"{stage} role: {each} boundary"
    # And nothing allows them, nor any other call on a policy.
    for statement in statements:
        if statement["Effect"] == "Allow":
            actions = {a.lower() for a in as_list(statement["Action"])}
            assert not actions & {a.lower() for a in (*edits, "iam:DeleteRolePermissionsBoundary")}, statement["Sid"]
            assert not any(":policy/" in r and ":iam::aws:" not in r for r in as_list(statement["Resource"]))
    # Belt and braces: whatever else is allowed, no role write without exactly this boundary.
    (guard,) = [s for s in statements if s["Effect"] == "Deny" and "StringNotEquals" in (s.get("Condition") or {})]
    assert guard["Condition"] == {"StringNotEquals": {"iam:PermissionsBoundary": boundary_arn(stage)}}
    assert {a.lower() for a in guard["Action"]} == {a.lower() for a in ROLE_WRITES}
    assert guard["Resource"] == f"arn:aws:iam::{ACCOUNT}:role/whatsapp-ingest-{stage}-*"


# --- docs/DEPLOY.md -----------------------------------------------------------------


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


# --- linters ------------------------------------------------------------------------


def tool(name: str) -> str | None:
    """A linter from the venv's bin (where requirements-dev.txt installs it), else the PATH."""
    candidate = VENV_BIN / name
    return str(candidate) if candidate.exists() else shutil.which(name)


def test_the_oidc_role_template_passes_cfn_lint() -> None:
    cfn_lint = tool("cfn-lint")
    assert cfn_lint is not None, "cfn-lint comes with aws-sam-cli in requirements-dev.txt"
    result = subprocess.run([cfn_lint, str(OIDC_ROLE_TEMPLATE)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
