"""``fnserve runtime register|list|show|delete``: the runtimes functions run in."""

from __future__ import annotations

import json
from typing import Any

import click

RUNTIME_TYPES = ("host", "venv", "apptainer", "singularity", "podman", "docker", "charliecloud")


def _client() -> Any:
    from fnserve.client import Client

    return Client()


def add_commands(main: click.Group) -> None:
    @main.group()
    def runtime() -> None:
        """Register and list runtimes (container images, Python environments)."""

    @runtime.command("register")
    @click.argument("name")
    @click.option("--type", "type_", type=click.Choice(RUNTIME_TYPES), required=True, help="Kind of runtime.")
    @click.option("--image", default="", help="Image location, or the interpreter's path for a venv runtime.")
    @click.option("--description", default="", help="A line saying what is in it.")
    def register(name: str, type_: str, image: str, description: str) -> None:
        """Register runtime NAME; prints its id. Endpoints run it when configured under NAME."""
        click.echo(_client().register_runtime(name, type_, image=image, description=description))

    @runtime.command("list")
    @click.option("--shared", is_flag=True, help="Also runtimes others shared with you.")
    def list_(shared: bool) -> None:
        """List your runtimes."""
        rows = _client().list_runtimes(shared=shared)
        for r in rows:
            click.echo(f"{r['runtime_id']}  {r['name']:<20} {r['type']:<12} {r['image']}")
        if not rows:
            click.echo("no runtimes yet: `fnserve runtime register NAME --type podman --image IMAGE`")

    @runtime.command("show")
    @click.argument("runtime")
    def show(runtime: str) -> None:
        """Show runtime RUNTIME (id or name)."""
        click.echo(json.dumps(_client().get_runtime(runtime), indent=2, sort_keys=True))

    @runtime.command("delete")
    @click.argument("runtime")
    def delete(runtime: str) -> None:
        """Delete runtime RUNTIME (id or name)."""
        _client().delete_runtime(runtime)
        click.echo(f"deleted {runtime}")
