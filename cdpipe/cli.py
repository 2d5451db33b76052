"""The ``cdpipe`` command line."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cdpipe import config, status
from cdpipe.environment import Environment
from cdpipe.errors import CdpipeError
from cdpipe.state import load as load_state

app = typer.Typer(help="Continuous delivery: provision, deploy and run production.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False)


class ProviderChoice(StrEnum):
    local = "local"
    aws = "aws"


ProviderOpt = Annotated[ProviderChoice | None,
                        typer.Option("--provider", help="where instances live (default: local)")]


def _show(line: str) -> None:
    console.print(line, markup=False, soft_wrap=True)


def _env(provider: ProviderChoice | None) -> Environment:
    return Environment(config.load(), provider.value if provider else None, show=_show)


@app.command()
def provision(provider: ProviderOpt = None) -> None:
    """Create or find the instances (proxy, redis, prod, canary) without configuring them."""
    _env(provider).provision()


@app.command()
def up(
    ref: Annotated[str, typer.Option(help="commit, branch or tag to deploy")] = "HEAD",
    provider: ProviderOpt = None,
) -> None:
    """Provision, configure with Ansible, and deploy REF to prod and canary."""
    env = _env(provider)
    env.up(ref)
    report = status.collect(env.settings, env.state)
    proxy_url = report["proxy"]["url"]
    inv = env.settings.inventory_file
    console.print(f"\n[bold green]cdpipe is up[/]: {proxy_url}")
    console.print(f"  try:  curl -s {proxy_url}/")
    console.print(f"        curl -si {proxy_url}/hiddenfeature   # 404 while the flag is off")
    redis_server = env.state.of_role("redis")[0]
    console.print(
        f"        REDISCLI_AUTH=$(cat {env.settings.secrets_dir}/redis_password) "
        f"redis-cli -p {redis_server.ports['redis']} SET flag:hiddenfeature on",
        markup=False, soft_wrap=True,
    )
    console.print("        cdpipe status")
    console.print(f"  ansible-playbook -i {inv} playbooks/site.yml   # converge from a laptop",
                  markup=False, soft_wrap=True)


@app.command()
def deploy(
    ref: Annotated[str, typer.Option(help="commit, branch or tag to deploy")],
    target: Annotated[str | None, typer.Option(help="prod or canary (default: both)")] = None,
    provider: ProviderOpt = None,
) -> None:
    """Deploy a commit (what the Jenkins post-build step calls)."""
    _env(provider).deploy(ref, target)


@app.command("status")
def status_cmd(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Instances, addresses, versions, health, weights, flags and alerts."""
    settings = config.load()
    report = status.collect(settings, load_state(settings.state_file))
    if as_json:
        print(json.dumps(report, indent=2))
        return
    if not report["up"]:
        console.print("no environment is up; run `cdpipe up`")
        return
    console.print(f"provider {report['provider']}   proxy {report['proxy']['url']}")
    table = Table("id", "role", "url", "version", "healthy")
    for inst in report["instances"]:
        table.add_row(inst["id"], inst["role"], inst["url"], (inst["version"] or "-")[:12],
                      "[green]yes[/]" if inst["healthy"] else "[red]no[/]")
    console.print(table)
    canary = report["canary"]
    console.print(f"canary weight {canary['weight']}%   alert {'on' if canary['alert'] else 'off'}")
    flags = ", ".join(f"{k}={v}" for k, v in report["flags"].items()) or "none"
    console.print(f"flags: {flags}", markup=False)


@app.command()
def down(provider: ProviderOpt = None) -> None:
    """Stop and remove every instance cdpipe created, leaving nothing running."""
    removed = _env(provider).down()
    console.print(f"removed {len(removed)} instance(s): {', '.join(removed) or 'none'}")


def main() -> None:
    try:
        app()
    except CdpipeError as exc:
        err_console.print(f"error: {exc}", markup=False, soft_wrap=True, style="bold red")
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]")
        raise SystemExit(130) from None
