"""fanout.Image: Flyte 2's image builder, rendering a Dockerfile under a content-derived name."""

from __future__ import annotations

from pathlib import Path

import pytest

import fanout
from fanout.image import Image


def test_a_builder_renders_its_layers_in_order_and_runs_tasks_as_a_user() -> None:
    image = (
        Image.from_debian_base(python_version=(3, 12), name="etl")
        .with_apt_packages("git", "curl")
        .with_pip_packages("numpy", "pandas>=2", pre=True)
        .with_env_vars({"MODE": 'say "hi"'})
        .with_commands(["mkdir -p /data"])
        .with_workdir("/data")
    )
    assert image.dockerfile() == (
        "FROM python:3.12-slim-bookworm\n"
        "USER root\n"
        "RUN python -m pip install --no-cache-dir fanout\n"
        "RUN apt-get update && apt-get install -y --no-install-recommends git curl && rm -rf /var/lib/apt/lists/*\n"
        "RUN python -m pip install --no-cache-dir --pre numpy pandas>=2\n"
        'ENV MODE="say \\"hi\\""\n'
        "RUN mkdir -p /data\n"
        "WORKDIR /data\n"
        "USER 10001:10001\n"
    )


def test_each_step_is_a_new_image_and_the_name_follows_the_content(tmp_path: Path) -> None:
    base = Image.from_base("fanout-runtime:dev")
    one, two = base.with_env_vars({"A": "1"}), base.with_env_vars({"A": "2"})
    assert base.uri == "fanout-runtime:dev" and base.layers == ()  # a reference is its own name
    assert one.uri != two.uri
    assert one.uri == Image.from_base("fanout-runtime:dev").with_env_vars({"A": "1"}).uri
    assert Image.from_debian_base(registry="ghcr.io/acme/").uri.startswith("ghcr.io/acme/fanout-task:")
    source = tmp_path / "helper.py"
    source.write_text("x = 1\n")
    copied = base.with_source_file(source)
    before = copied.uri
    source.write_text("x = 2\n")
    assert copied.uri != before  # a copied file's content is part of the name


def test_a_dockerfile_of_ones_own_gets_the_layers_after_it(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM debian:bookworm\nRUN echo mine\n")
    image = Image.from_dockerfile(tmp_path / "Dockerfile", name="own").with_env_vars({"B": "2"})
    assert image.dockerfile() == 'FROM debian:bookworm\nRUN echo mine\nENV B="2"\n'


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: Image.from_base("has space"), ValueError),
        (lambda: Image.from_debian_base(name="Upper"), ValueError),
        (lambda: Image.from_base("x").with_pip_packages(), ValueError),
        (lambda: Image.from_base("x").with_pip_packages("a b"), ValueError),
        (lambda: Image.from_base("x").with_apt_packages("--allow-unauthenticated"), ValueError),
        (lambda: Image.from_base("x").with_env_vars({"BAD NAME": "1"}), ValueError),
        (lambda: Image.from_base("x").with_source_folder("/no/such/folder"), NotADirectoryError),
        (lambda: Image.from_dockerfile("/no/such/Dockerfile"), FileNotFoundError),
        (lambda: fanout.TaskEnvironment(name="e", image=3), TypeError),
    ],
)
def test_bad_definitions_are_refused_when_written(make: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        make()  # type: ignore[operator]


def test_a_task_environment_puts_the_images_name_in_its_specs() -> None:
    image = Image.from_base("fanout-runtime:dev").with_env_vars({"A": "1"})
    env = fanout.TaskEnvironment(name="imaged", image=image)

    @env.task
    async def noop() -> None:
        return None

    assert noop.spec("n", b"{}").image == image.uri
