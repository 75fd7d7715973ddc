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

    @runtime.command("build")
    @click.argument("name")
    @click.argument("recipe", type=click.Path(exists=True, dir_okay=False))
    @click.option("--output", "-o", default=None, help="Image file to write (default: NAME.sif here).")
    @click.option("--force", is_flag=True, help="Overwrite an existing image.")
    @click.option("--no-fakeroot", is_flag=True, help="Build without --fakeroot (as root, or where the site allows it).")
    @click.option("--apptainer", "command", default="", help="The apptainer/singularity binary (default: found on PATH).")
    @click.option("--register", is_flag=True, help="Then register runtime NAME (type apptainer) with the image's absolute path.")
    def build(name: str, recipe: str, output: str | None, force: bool, no_fakeroot: bool, command: str, register: bool) -> None:
        """Build an Apptainer/Singularity image for runtime NAME from RECIPE (a .def file) through spython.

        Example: fnserve runtime build sci containers/fnserve-worker.def --register
        """
        import os
        import subprocess

        try:
            from site_manager.runtimes import apptainer
        except ImportError as exc:  # spython comes with fnserve[site]
            raise click.ClickException(f"building images needs fnserve[site] (spython): {exc}") from exc
        try:
            binary = apptainer.find_binary(command)
        except apptainer.NoApptainer as exc:
            raise click.ClickException(f"cannot build here: {exc}. Build on a host with Apptainer, or build a podman/Docker "
                                       "image from containers/Dockerfile instead (see docs/runtimes.md)") from exc
        image = os.path.abspath(output or f"{name}.sif")
        click.echo(f"building {image} from {recipe} with {binary}", err=True)
        try:
            for line in apptainer.build(recipe, image, binary, fakeroot=not no_fakeroot, force=force):
                click.echo(line.rstrip("\n"), err=True)
        except subprocess.CalledProcessError as exc:
            raise click.ClickException(f"{os.path.basename(binary)} build exited with status {exc.returncode}") from exc
        click.echo(image)
        if register:
            click.echo(_client().register_runtime(name, "apptainer", image=image, description=f"built from {recipe}"))

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
        click.echo(json.dumps(_client().get_runtime(runtime), indent=2, sort_keys=True, ensure_ascii=False))

    @runtime.command("delete")
    @click.argument("runtime")
    def delete(runtime: str) -> None:
        """Delete runtime RUNTIME (id or name)."""
        _client().delete_runtime(runtime)
        click.echo(f"deleted {runtime}")
