"""The GitHub Actions workflows and the OIDC deploy role agree with the project and
with the security rules: pinned actions, OIDC only where AWS is touched, no stored
keys, and only commands, config envs and parameters that exist.

actionlint runs too when it is installed in the venv (or on the PATH); cfn-lint
checks deploy/github-oidc-role.yaml."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
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


@pytest.fixture(scope="module")
def oidc_role() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(OIDC_ROLE_TEMPLATE.read_text(encoding="utf-8"), Loader=gateway.CfnLoader)
    return loaded


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
                assert re.fullmatch(r"\$\{\{\s*(vars|secrets)\.AWS_DEPLOY_ROLE_ARN\s*\}\}", inputs["role-to-assume"])
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


def test_deploy_passes_the_supabase_url_the_secret_arns_and_the_alarm_topic_from_stage_variables() -> None:
    for name, job, env, command in deploy_jobs():
        overrides = parameter_overrides(command)
        assert set(overrides) == {"Stage", "SupabaseUrl", "AuthSecretArn", "DatabaseSecretArn", "AlarmTopicArn"}, name
        (deploy_step,) = [s for s in steps(job) if re.search(r"\bsam\s+deploy\b", s.get("run", ""))]
        step_env = deploy_step.get("env") or {}
        prefix = "DEV_" if env == "default" else "PROD_"
        for parameter, variable in {
            "SupabaseUrl": "SUPABASE_URL",
            "AuthSecretArn": "AUTH_SECRET_ARN",
            "DatabaseSecretArn": "DATABASE_SECRET_ARN",
            "AlarmTopicArn": "ALARM_TOPIC_ARN",
        }.items():
            assert overrides[parameter] == f"${{{variable}}}", f"{name}: {parameter}"
            assert step_env[variable] == f"${{{{ vars.{prefix}{variable} }}}}", f"{name}: {variable}"


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


# --- the OIDC deploy role -----------------------------------------------------------


def role_statements(template: dict[str, Any]) -> list[dict[str, Any]]:
    role = template["Resources"]["DeployRole"]["Properties"]
    return [statement for policy in role["Policies"] for statement in policy["PolicyDocument"]["Statement"]]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_the_role_trusts_only_this_repos_main_branch_version_tags_and_production_environment(
    oidc_role: dict[str, Any],
) -> None:
    (trust,) = oidc_role["Resources"]["DeployRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Effect"] == "Allow"
    assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert trust["Principal"]["Federated"].endswith(":oidc-provider/token.actions.githubusercontent.com")
    assert trust["Condition"]["StringEquals"] == {"token.actions.githubusercontent.com:aud": "sts.amazonaws.com"}
    subjects = trust["Condition"]["StringLike"]["token.actions.githubusercontent.com:sub"]
    assert sorted(subjects) == sorted(
        [
            "repo:${GitHubOrg}/${GitHubRepo}:ref:refs/heads/main",
            "repo:${GitHubOrg}/${GitHubRepo}:ref:refs/tags/v*",
            "repo:${GitHubOrg}/${GitHubRepo}:environment:production",
        ]
    )


def test_the_oidc_provider_is_created_only_when_asked(oidc_role: dict[str, Any]) -> None:
    provider = oidc_role["Resources"]["GitHubOidcProvider"]
    assert provider["Type"] == "AWS::IAM::OIDCProvider"
    assert provider["Condition"] == "ShouldCreateOidcProvider"
    assert provider["Properties"]["Url"] == "https://token.actions.githubusercontent.com"
    assert provider["Properties"]["ClientIdList"] == ["sts.amazonaws.com"]
    assert oidc_role["Parameters"]["CreateOidcProvider"]["AllowedValues"] == ["true", "false"]


def test_the_role_can_describe_secrets_but_never_read_them(oidc_role: dict[str, Any]) -> None:
    actions = [a.lower() for s in role_statements(oidc_role) if s["Effect"] == "Allow" for a in as_list(s["Action"])]
    assert [a for a in actions if a.startswith("secretsmanager:")] == ["secretsmanager:describesecret"]
    assert "secretsmanager:getsecretvalue" not in OIDC_ROLE_TEMPLATE.read_text(encoding="utf-8").lower()


def test_the_role_allows_no_wildcard_actions_and_cannot_delete_stacks(oidc_role: dict[str, Any]) -> None:
    for statement in role_statements(oidc_role):
        for action in as_list(statement["Action"]):
            assert "*" not in action, f"{statement['Sid']}: {action}"
            assert action.lower() != "cloudformation:deletestack"


def test_the_role_acts_only_on_this_projects_names(oidc_role: dict[str, Any]) -> None:
    allowed_prefixes = {
        "cloudformation": (":stack/whatsapp-ingest-*/", ":stack/aws-sam-cli-managed-default/", ":transform/"),
        "s3": (":::aws-sam-cli-managed-default",),
        "lambda": (":function:whatsapp-", ":layer:whatsapp-", ":event-source-mapping:"),
        "iam": (":role/whatsapp-ingest-", ":role/${RoleName}"),
        "logs": (":log-group:/aws/lambda/whatsapp-",),
        "sqs": (":whatsapp-ingest-",),
        "cloudwatch": (":alarm:whatsapp-", ":alarm:*"),
        "secretsmanager": (":secret:whatsapp-ingest/",),
        "apigateway": ("::/apis", "::/tags/"),
    }
    for statement in role_statements(oidc_role):
        services = {action.split(":")[0] for action in as_list(statement["Action"])}
        for resource in as_list(statement["Resource"]):
            if resource == "*":
                # On every resource: only reads (calls that take no ARN), or a write narrowed by a condition.
                read_only = all(
                    re.match(r"(Describe|List|Get|Validate)", action.split(":")[1])
                    for action in as_list(statement["Action"])
                )
                assert read_only or statement.get("Condition"), f"{statement['Sid']} writes on every resource"
                continue
            for service in services:
                assert any(p in resource for p in allowed_prefixes[service]), f"{statement['Sid']}: {resource}"


def test_the_role_passes_roles_to_lambda_only_and_attaches_no_arbitrary_managed_policy(
    oidc_role: dict[str, Any],
) -> None:
    by_sid = {s["Sid"]: s for s in role_statements(oidc_role)}
    assert by_sid["IamPassStackRolesToLambda"]["Condition"] == {
        "StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}
    }
    attachable = by_sid["IamStackRoleManagedPolicies"]["Condition"]["ArnEquals"]["iam:PolicyARN"]
    assert all(":iam::aws:policy/" in arn for arn in attachable)
    assert not any("Administrator" in arn or "FullAccess" in arn for arn in attachable)


def test_the_role_can_never_edit_itself(oidc_role: dict[str, Any]) -> None:
    role_name = oidc_role["Parameters"]["RoleName"]
    assert not role_name["Default"].startswith("whatsapp-ingest-")
    assert re.match(role_name["AllowedPattern"], "whatsapp-ingest-deploy") is None
    assert re.match(role_name["AllowedPattern"], role_name["Default"])
    deny = next(s for s in role_statements(oidc_role) if s["Effect"] == "Deny")
    assert deny["Resource"].endswith(":role/${RoleName}")
    assert {"iam:PutRolePolicy", "iam:AttachRolePolicy", "iam:UpdateAssumeRolePolicy"} <= set(deny["Action"])


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
