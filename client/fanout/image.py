"""Container images for task environments, as Flyte 2's `Image`: a reference, or a builder.

    image = (
        fanout.Image.from_debian_base(python_version=(3, 11))
        .with_apt_packages("git")
        .with_pip_packages("numpy", "pandas")
        .with_env_vars({"MODE": "prod"})
    )
    env = fanout.TaskEnvironment(name="etl", image=image)
    fanout.build(image)  # on the local Docker engine; the docker backend then starts tasks from it

Each `with_*` returns a new Image (they are immutable, so one base can grow
several images). `dockerfile()` renders the Dockerfile; `uri` names the image by
a digest of that text and of the files it copies, so the same definition is the
same image everywhere, and a changed one is a new image. A task environment's
spec carries the uri; the docker backend starts its workers from it, and the
process backend, which has no images, says once that it runs them in its own
Python.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

# Debian's Python images; the runtime's own wheel goes on top (install_fanout).
DEBIAN_BASE = "python:{major}.{minor}-slim-bookworm"
# Where copied sources land in the image, and the user tasks run as (the worker overrides it anyway).
SOURCE_ROOT = "/root/src"
TASK_USER = "10001:10001"


@dataclass(frozen=True)
class _Layer:
    kind: str  # apt, pip, env, run, copy, workdir
    args: tuple[str, ...]


@dataclass(frozen=True)
class Image:
    """An image to run tasks in. Build one with the class methods, not the constructor."""

    base: str = ""
    name: str = "fanout-task"
    registry: str = ""
    layers: tuple[_Layer, ...] = ()
    dockerfile_path: str = ""  # from_dockerfile: that file is the image, layers go on top

    # Where an image starts -------------------------------------------------------------

    @classmethod
    def from_debian_base(
        cls,
        python_version: tuple[int, int] = (3, 11),
        name: str = "fanout-task",
        registry: str = "",
        install_fanout: bool = True,
        install_flyte: bool | None = None,
    ) -> Image:
        """Debian with Python, and (unless told not to) the fanout runtime the workers need.
        `install_flyte` is Flyte's name for `install_fanout`."""
        major, minor = python_version
        image = cls(base=DEBIAN_BASE.format(major=major, minor=minor), name=_name(name), registry=registry)
        if install_flyte if install_flyte is not None else install_fanout:
            image = image.with_pip_packages("fanout")
        return image

    @classmethod
    def from_base(cls, image_uri: str) -> Image:
        """An existing image by reference (it must hold the fanout runtime to run tasks)."""
        if not image_uri or any(c.isspace() for c in image_uri):
            raise ValueError(f"an image reference has no spaces and is not empty, not {image_uri!r}")
        return cls(base=image_uri)

    @classmethod
    def from_dockerfile(cls, file: str | Path, registry: str = "", name: str = "fanout-task") -> Image:
        """A Dockerfile of your own; layers added with the `with_*` methods go after its last line."""
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"no Dockerfile at {path}")
        return cls(name=_name(name), registry=registry, dockerfile_path=str(path.resolve()))

    # What goes on top ------------------------------------------------------------------

    def with_apt_packages(self, *packages: str) -> Image:
        return self._with("apt", _words("apt package", packages))

    def with_pip_packages(self, *packages: str, pre: bool = False, extra_args: str = "") -> Image:
        options = (*(["--pre"] if pre else []), *extra_args.split())
        return self._with("pip", (*options, *_words("pip package", packages)))

    def with_requirements(self, file: str | Path) -> Image:
        return self.with_source_file(file, f"{SOURCE_ROOT}/requirements.txt")._with(
            "run", (f"python -m pip install --no-cache-dir -r {SOURCE_ROOT}/requirements.txt",)
        )

    def with_env_vars(self, env_vars: dict[str, str]) -> Image:
        pairs = []
        for key, value in env_vars.items():
            if not key.replace("_", "").isalnum() or key[0].isdigit():
                raise ValueError(f"environment variable name {key!r}: letters, digits and _ only")
            pairs.append(f"{key}={_quote(str(value))}")
        return self._with("env", tuple(pairs))

    def with_commands(self, commands: list[str]) -> Image:
        return self._with("run", tuple(commands))

    def with_source_file(self, file: str | Path, dst: str = "") -> Image:
        path = Path(file).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"no file at {path}")
        return self._with("copy", (str(path), dst or f"{SOURCE_ROOT}/{path.name}"))

    def with_source_folder(self, folder: str | Path, dst: str = "") -> Image:
        path = Path(folder).resolve()
        if not path.is_dir():
            raise NotADirectoryError(f"no folder at {path}")
        return self._with("copy", (str(path), dst or f"{SOURCE_ROOT}/{path.name}"))

    def with_workdir(self, workdir: str) -> Image:
        return self._with("workdir", (workdir,))

    def _with(self, kind: str, args: tuple[str, ...]) -> Image:
        return replace(self, layers=(*self.layers, _Layer(kind, args)))

    # What it is --------------------------------------------------------------------------

    def dockerfile(self) -> str:
        """The Dockerfile this image is built from; its COPY sources are named as `build` lays them out."""
        lines = (
            Path(self.dockerfile_path).read_text().rstrip("\n").splitlines()
            if self.dockerfile_path
            else [f"FROM {self.base}"]
        )
        if not self.dockerfile_path and self.layers:
            lines.append("USER root")  # packages and commands install as root, whatever user the base ends with
        for i, layer in enumerate(self.layers):
            lines.append(_render(layer, i))
        if not self.dockerfile_path and self.layers:
            lines.append(f"USER {TASK_USER}")
        return "\n".join(lines) + "\n"

    @property
    def uri(self) -> str:
        """The image's name: a reference as given, or registry/name:digest for a built one."""
        if not self.layers and not self.dockerfile_path:
            return self.base
        prefix = f"{self.registry.rstrip('/')}/" if self.registry else ""
        return f"{prefix}{self.name}:{self._digest()[:16]}"

    def _digest(self) -> str:
        h = hashlib.sha256(self.dockerfile().encode())
        for layer in self.layers:
            if layer.kind == "copy":
                for path in _files(Path(layer.args[0])):
                    h.update(str(path).encode() + b"\0" + path.read_bytes())
        return h.hexdigest()

    def build_context(self, directory: Path) -> None:
        """Write the Dockerfile and the sources it copies into `directory` (empty or new)."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "Dockerfile").write_text(self.dockerfile())
        for i, layer in enumerate(self.layers):
            if layer.kind == "copy":
                source, target = Path(layer.args[0]), directory / f"copy{i}"
                if source.is_dir():
                    shutil.copytree(source, target)
                else:
                    shutil.copy2(source, target)


def build(image: Image | str) -> str:
    """Build `image` on the local Docker engine (DOCKER_HOST or its socket); its uri.

    A reference is only checked to exist there. Raises RuntimeError with the engine's words."""
    import docker
    import docker.errors

    uri = image if isinstance(image, str) else image.uri
    client = docker.from_env()
    try:
        if isinstance(image, str) or (not image.layers and not image.dockerfile_path):
            client.images.get(uri)
            return uri
        with tempfile.TemporaryDirectory(prefix="fanout-image-") as context:
            image.build_context(Path(context))
            client.images.build(path=context, tag=uri, rm=True, forcerm=True)
        return uri
    except docker.errors.ImageNotFound:
        raise RuntimeError(f"the Docker engine has no image {uri}") from None
    except docker.errors.BuildError as exc:
        raise RuntimeError(f"building {uri} failed: {exc}") from None
    finally:
        client.close()


def _render(layer: _Layer, index: int) -> str:
    args = layer.args
    if layer.kind == "apt":
        return (
            "RUN apt-get update && apt-get install -y --no-install-recommends "
            + " ".join(args)
            + " && rm -rf /var/lib/apt/lists/*"
        )
    if layer.kind == "pip":
        return "RUN python -m pip install --no-cache-dir " + " ".join(args)
    if layer.kind == "env":
        return "ENV " + " ".join(args)
    if layer.kind == "run":
        return "\n".join(f"RUN {command}" for command in args)
    if layer.kind == "copy":
        return f"COPY copy{index} {args[1]}"
    if layer.kind == "workdir":
        return f"WORKDIR {args[0]}"
    raise ValueError(f"unknown layer {layer.kind}")


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def _words(what: str, values: tuple[str, ...]) -> tuple[str, ...]:
    if not values:
        raise ValueError(f"name at least one {what}")
    for value in values:
        if not value or any(c.isspace() for c in value) or value.startswith("-"):
            raise ValueError(f"{what} {value!r}: one name, no spaces, not an option")
    return values


def _name(name: str) -> str:
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name != name.lower():
        raise ValueError(f"image name {name!r}: lowercase letters, digits, '-', '_' and '.' only")
    return name


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
