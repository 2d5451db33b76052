"""The ``cdpipe`` command line."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cdpipe import config, gitref, redis_users, status
from cdpipe.cli_controls import canary_app, flag_app
from cdpipe.cli_support import (
    EnvOpt,
    ProviderOpt,
    cdpipe_command,
    console,
    environment_for,
    err_console,
    note,
    redis_cli_hint,
    stop_on_sigterm,
)
from cdpipe.errors import CdpipeError
from cdpipe.model import DASHBOARD_PORT
from cdpipe.state import load as load_state
from cdpipe_host.keys import flag_key
from cdpipe_host.names import one_line
from monitoring.config import SCALE_MAX_LIMIT, ConfigError, MonitorConfig, check_rules

app = typer.Typer(help="Continuous delivery: provision, deploy and run production.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
@app.command()
def provision(provider: ProviderOpt = None, environment: EnvOpt = None) -> None:
    """Create or find the instances (proxy, redis, prod, canary) without configuring them."""
    env = environment_for(provider, environment)
    with env.locked("provision"):
        env.provision()


MONITOR_DEFAULTS = MonitorConfig()  # what the help of `up` names as the defaults


@app.command()
def up(
    ref: Annotated[str, typer.Option(help="commit, branch or tag to deploy")] = "HEAD",
    provider: ProviderOpt = None,
    environment: EnvOpt = None,
    monitor_interval: Annotated[float | None, typer.Option(
        min=1, help="seconds between the monitor's polls (default "
                    f"{MONITOR_DEFAULTS.interval_seconds:g})")] = None,
    scale_cooldown: Annotated[float | None, typer.Option(
        min=0, help="seconds between two scale actions (default "
                    f"{MONITOR_DEFAULTS.scaling.cooldown_seconds:g})")] = None,
    scale_max: Annotated[int | None, typer.Option(
        min=1, max=SCALE_MAX_LIMIT,
        help="the most prod instances the monitor scales out to (default "
             f"{MONITOR_DEFAULTS.scaling.max_count})")] = None,
    monitor_rules: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, resolve_path=True,
        help="YAML file of alert and scaling rules")] = None,
) -> None:
    """Provision, configure with Ansible, and deploy REF to prod and canary."""
    gitref.check(ref)
    if monitor_rules is not None:
        try:  # refused here, before anything runs, as the monitor would refuse it
            check_rules(monitor_rules)
        except ConfigError as exc:
            raise CdpipeError(str(exc)) from None
    options: dict[str, str | float | int] = {}
    if monitor_interval is not None:
        options["monitor_interval_seconds"] = monitor_interval
    if scale_cooldown is not None:
        options["monitor_scale_cooldown_seconds"] = scale_cooldown
    if scale_max is not None:
        options["monitor_scale_max_count"] = scale_max
    if monitor_rules is not None:
        options["monitor_rules_file"] = str(monitor_rules)
    env = environment_for(provider, environment)
    env.up(ref, options)
    report = status.collect(env.settings, env.state)
    proxy_url = report["proxy"]["url"]
    inv = env.settings.inventory_file
    console.print(f"\n[bold green]cdpipe is up[/]: {proxy_url}")
    console.print(f"  try:  curl -s {proxy_url}/")
    console.print(f"        curl -si {proxy_url}/hiddenfeature   # 404 while the flag is off")
    redis_server = env.state.of_role("redis")[0]
    port = redis_server.ports["redis"]
    if env.provider.name != "local":
        # Redis answers only the proxy and app machines: through an SSH tunnel via the proxy.
        proxy = env.state.of_role("proxy")[0]
        console.print(f"        ssh -N -L 16379:{redis_server.internal_address}:{port} "
                      f"{env.settings.aws_ssh_user}@{proxy.host} &", markup=False,
                      soft_wrap=True)
        port = 16379
    hint = redis_cli_hint(env.settings, port)
    console.print(f"        {hint} SET {flag_key('hiddenfeature')} on", markup=False,
                  soft_wrap=True)
    console.print(f"        {cdpipe_command()} status", markup=False)
    if env.provider.name == "local":
        console.print(f"        {cdpipe_command()} dashboard   # live page: "
                      f"http://127.0.0.1:{DASHBOARD_PORT}/", markup=False)
    else:  # it runs on the proxy machine, on its loopback address: a tunnel reaches it
        proxy = env.state.of_role("proxy")[0]
        console.print(f"        ssh -N -L {DASHBOARD_PORT}:127.0.0.1:{DASHBOARD_PORT} "
                      f"{env.settings.aws_ssh_user}@{proxy.host} &   # then the live page: "
                      f"http://127.0.0.1:{DASHBOARD_PORT}/", markup=False, soft_wrap=True)
    console.print(f"  ansible-playbook -i {inv} playbooks/site.yml   # converge from a laptop",
                  markup=False, soft_wrap=True)


@app.command()
def deploy(
    ref: Annotated[str, typer.Option(help="commit, branch or tag to deploy")],
    target: Annotated[str | None, typer.Option(help="prod or canary (default: both)")] = None,
    provider: ProviderOpt = None,
    environment: EnvOpt = None,
) -> None:
    """Deploy a commit (what the Jenkins post-build step calls)."""
    gitref.check(ref)
    environment_for(provider, environment).deploy(ref, target)


@app.command("status")
def status_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    show_secrets: Annotated[bool, typer.Option(
        "--show-secrets", help="print the Redis URL with its password")] = False,
    provider: ProviderOpt = None,
    environment: EnvOpt = None,
) -> None:
    """Instances, addresses, versions, health, weights, flags and alerts (aws: as the
    instances' tags say, read again each time)."""
    env = environment_for(provider, environment, show=note)
    settings, state = env.settings, env.state
    report = status.collect(settings, state, show_secrets=show_secrets)
    # The AWS environment's id and region (what inventory/aws_ec2.yml needs); None locally.
    report["environment"] = state.environment or None
    report["region"] = state.region or None
    if as_json:
        print(json.dumps(report, indent=2))
        return
    if not report["up"]:
        console.print("no environment is up; run `cdpipe up`")
        return
    where = (f"   environment {state.environment} ({state.region})"
             if state.environment else "")
    console.print(f"provider {report['provider']}{where}   proxy {report['proxy']['url']}",
                  markup=False)
    table = Table("id", "role", "url", "version", "healthy")
    for inst in report["instances"]:
        table.add_row(inst["id"], inst["role"], inst["url"], (inst["version"] or "-")[:12],
                      "[green]yes[/]" if inst["healthy"] else "[red]no[/]")
    console.print(table)
    canary = report["canary"]
    console.print(f"canary weight {canary['weight']}%   alert {'on' if canary['alert'] else 'off'}")
    flags = ", ".join(f"{k}={v}" for k, v in report["flags"].items()) or "none"
    console.print(f"flags: {flags}", markup=False)
    lock = report["lock"]
    held = ("free" if lock is None else f"held by {one_line(lock['owner'], 300)} (" + (
        "no expiry" if lock["seconds_left"] is None
        else f"expires in {lock['seconds_left']} s") + ")")
    console.print(f"environment lock: {held}", markup=False, soft_wrap=True)
    console.print(f"redis {report['redis']['url']}   (password: {report['redis']['password_file']}"
                  f"{'' if show_secrets else '; --show-secrets prints it in the URL'})",
                  markup=False, soft_wrap=True)


app.add_typer(flag_app, name="flag")
app.add_typer(canary_app, name="canary")


scale_app = typer.Typer(help="Scale prod out and in (what the monitor calls).",
                        no_args_is_help=True)
app.add_typer(scale_app, name="scale")


@scale_app.command("out")
def scale_out(max_count: Annotated[int, typer.Option("--max", min=1, max=SCALE_MAX_LIMIT)] = 4,
              ) -> None:
    """Add a prod instance serving prod's commit, in rotation once healthy."""
    line = environment_for(None).scale_out(max_count)
    if line is None:
        console.print(f"nothing to do: prod is at its maximum of {max_count} instances")
        raise SystemExit(3)
    console.print(line, markup=False)


@scale_app.command("in")
def scale_in(max_count: Annotated[int, typer.Option("--max", min=1, max=SCALE_MAX_LIMIT,
                                                    hidden=True)] = 4) -> None:
    """Drain and remove the newest autoscaled prod instance (never those `up` made)."""
    line = environment_for(None).scale_in()
    if line is None:
        console.print("nothing to do: no autoscaled prod instance")
        raise SystemExit(3)
    console.print(line, markup=False)


@app.command("iam-policy")
def iam_policy_cmd(environment: EnvOpt = None) -> None:
    """Print the IAM policy of the environment's scaler (the proxy machine's instance
    profile) as JSON."""
    from cdpipe.providers.aws.iam_policy import dumps
    from cdpipe.providers.aws.provider import Ec2Provider

    if environment is not None:
        config.check_environment_id(environment, "--env")
    settings = config.load()
    provider = Ec2Provider(settings)
    provider.attach(load_state(settings.state_file), environment)
    if not provider.region:
        raise CdpipeError("no AWS region: set AWS_REGION or CDPIPE_AWS_REGION")
    print(dumps(provider.scaler_policy()))


@app.command()
def dashboard(
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to listen on")
                    ] = DASHBOARD_PORT,
    host: Annotated[str, typer.Option(
        help="address to listen on (default: this machine only)")] = "127.0.0.1",
    allowed_host: Annotated[list[str] | None, typer.Option(
        help="a name the page is reached by besides loopback names and --host "
             "(NAME or NAME:PORT; repeatable); any other Host header is refused")] = None,
    tls_cert: Annotated[Path | None, typer.Option(
        help="serve HTTPS with this certificate (PEM; with --tls-key)")] = None,
    tls_key: Annotated[Path | None, typer.Option(
        help="the certificate's private key (PEM)")] = None,
    insecure: Annotated[bool, typer.Option(
        "--insecure", help="serve plain HTTP on a non-loopback --host anyway")] = False,
) -> None:
    """Serve the live dashboard: instances, traffic, canary, flags, alerts; actions
    after the operator's login. Runs until Ctrl-C."""
    from cdpipe.dashboard.actor import ActorEnvironment
    from cdpipe.dashboard.guards import tls_context
    from cdpipe.dashboard.server import serve

    tls = tls_context(host, tls_cert, tls_key, insecure)  # before anything else runs
    settings = config.load()
    env = (ActorEnvironment(settings) if settings.dashboard_actor
           else environment_for(None, show=note))
    if not env.state.instances:
        raise CdpipeError("no environment is up here; run `cdpipe up` first")

    password_file = env.settings.secrets_dir / redis_users.password_name(redis_users.OPERATOR)

    def ready(url: str) -> None:
        console.print(f"dashboard: {url}   (actions: log in with the operator's password, "
                      f"{password_file}; Ctrl-C stops it)", markup=False, soft_wrap=True)

    serve(env, host, port, ready, allowed_host or (), tls)


@app.command()
def down(provider: ProviderOpt = None, environment: EnvOpt = None) -> None:
    """Stop and remove every instance cdpipe created, leaving nothing running."""
    removed = environment_for(provider, environment).down()
    console.print(f"removed {len(removed)} instance(s): {', '.join(removed) or 'none'}")


def _error(message: str, limit: int) -> None:
    """One line on stderr, whatever the message holds (a value given on the command
    line or read from Redis: escaped, and cut after ``limit`` characters)."""
    err_console.print(f"error: {one_line(message, limit)}", markup=False, soft_wrap=True,
                      style="bold red")


def main(argv: list[str] | None = None) -> None:
    """Every bad input ends in one line on stderr and a non-zero exit: the command's
    own errors (exit 1) and Click's usage errors (exit 2; Click would print a usage
    box)."""
    previous = stop_on_sigterm()
    try:
        try:
            code = app(args=argv, prog_name="cdpipe", standalone_mode=False)
        except CdpipeError as exc:
            # Our messages cut the values they quote; a long one (Ansible's) stays whole.
            _error(str(exc), 4000)
            raise SystemExit(exc.exit_code) from None
        except typer.TyperException as exc:  # Click's usage errors: bad option, argument...
            message = exc.format_message()
            if not message:  # a group called without a command: its help is printed
                raise SystemExit(exc.exit_code) from None
            ctx = getattr(exc, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            _error(f"{message}{hint}", 400)  # Click quotes values whole
            raise SystemExit(exc.exit_code) from None
        except (KeyboardInterrupt, typer.Abort):
            err_console.print("[bold red]interrupted[/]")
            raise SystemExit(130) from None
        raise SystemExit(code if isinstance(code, int) else 0)
    finally:
        signal.signal(signal.SIGTERM, previous)  # a caller in this process keeps its own


if __name__ == "__main__":
    main()
