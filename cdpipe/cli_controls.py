"""``cdpipe flag`` and ``cdpipe canary``: the operator's reads and writes of the flags and
the canary in the environment's Redis (:mod:`cdpipe.controls`), and the canary's promote
and rollback (:mod:`cdpipe.canary`)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from cdpipe import canary, controls
from cdpipe.cli_support import console, environment_for, note
from cdpipe_host.keys import CANARY_ALERT, CANARY_WEIGHT, flag_key

flag_app = typer.Typer(help=f"Feature flags (Redis keys {flag_key('<name>')}).",
                       no_args_is_help=True)
canary_app = typer.Typer(help="The canary: status, kill switch, weight, promote, rollback.",
                         no_args_is_help=True)
def _redis() -> controls.redis.Redis:
    """The operator's client of the environment's Redis (aws: found from the tags)."""
    env = environment_for(None, show=note)
    return controls.client(env.settings, env.state)


@flag_app.command("set")
def flag_set(name: str, value: Annotated[str, typer.Argument(help="on, off or N%")]) -> None:
    """Set a flag: on, off or N% of users."""
    controls.check_flag(name, value)  # before Redis: the input's error first
    stored = controls.set_flag(_redis(), name, value)
    console.print(f"{flag_key(name)} = {stored}", markup=False)


@flag_app.command("delete")
def flag_delete(name: str) -> None:
    """Delete a flag (it then reads as off)."""
    controls.check_flag_name(name)  # before Redis: the input's error first
    existed = controls.delete_flag(_redis(), name)
    console.print(f"{flag_key(name)} deleted (reads as off)" if existed
                  else f"{flag_key(name)} was not set", markup=False)


@flag_app.command("list")
def flag_list() -> None:
    """List every flag and its value."""
    flags = controls.list_flags(_redis())
    if not flags:
        console.print("no flags set (every flag is off)")
    for name, value in flags.items():
        print(f"{name}\t{value}")  # tab-separated, for scripts


@canary_app.command("status")
def canary_status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Weight, alert, versions, and requests and 5xx counts of canary and prod."""
    out = canary.report(environment_for(None))
    if as_json:
        print(json.dumps(out, indent=2))
        return
    alert = "[red]on[/]" if out["alert"] else "off"
    console.print(f"canary weight {out['weight']}%   alert {alert}")
    table = Table("id", "role", "version", "status", "requests", "5xx")
    for srv in out["servers"]:
        table.add_row(srv["id"], srv["role"], (srv["version"] or "-")[:12],
                      str(srv.get("status", "-")), str(srv.get("requests", "-")),
                      str(srv.get("5xx", "-")))
    console.print(table)


@canary_app.command("alert")
def canary_alert() -> None:
    """Raise the canary alert: the canary gets no new request, at once."""
    controls.set_alert(_redis(), True)
    console.print(f"{CANARY_ALERT} = on (the canary receives no traffic)", markup=False)


@canary_app.command("clear")
def canary_clear() -> None:
    """Clear the canary alert: the canary gets its share again."""
    controls.set_alert(_redis(), False)
    console.print(f"{CANARY_ALERT} = off", markup=False)


@canary_app.command("weight")
def canary_weight(value: Annotated[str, typer.Argument(
        metavar="N", help="the canary's share of requests, an integer 0-100")]) -> None:
    """Set the canary's share of traffic in percent (canary:weight)."""
    weight = controls.check_weight(value)  # before Redis: the input's error first
    controls.set_weight(_redis(), str(weight))
    console.print(f"{CANARY_WEIGHT} = {weight}", markup=False)


@canary_app.command("promote")
def canary_promote(
    now: Annotated[bool, typer.Option(
        "--now", help="promote without the monitor judge's pass of the canary's "
                      "release (the emergency promote)")] = False,
) -> None:
    """Deploy the canary's commit to every prod server, one at a time, each drained
    first: on the monitor judge's decided pass of that commit (or --now)."""
    canary.promote(environment_for(None), now=now, show=note)


@canary_app.command("rollback")
def canary_rollback() -> None:
    """Redeploy prod's commit to the canary."""
    canary.rollback(environment_for(None))
