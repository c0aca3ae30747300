"""Packing and unpacking code bundles: deterministic digests, the ignores, the cap, and safe extraction."""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from fanout import errors
from fanout.bundles import active, pack, ship, unpack
from fanout.dispatch.pools import PoolKey, _fields
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb


def make_project(root: Path) -> Path:
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'p'\n")
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "sub" / "__init__.py").write_text("")
    (root / "pkg" / "sub" / "tasks.py").write_text("X = 1\n")
    (root / "helpers.py").write_text("def f():\n    return 1\n")
    for ignored in (".git", ".venv/lib", "pkg/__pycache__", "node_modules/x", ".fanout", "build"):
        (root / ignored).mkdir(parents=True, exist_ok=True)
        (root / ignored / "junk.py").write_text("junk")
    (root / "pkg" / "stale.pyc").write_bytes(b"\0")
    return root


def names(bundle: pack.Bundle) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(bundle.data), mode="r:gz") as tar:
        return tar.getnames()


def test_the_project_root_is_found_from_a_module_deep_in_it(tmp_path: Path) -> None:
    root = make_project(tmp_path / "proj")
    assert pack.source_root(str(root / "pkg" / "sub" / "tasks.py")) == root.resolve()
    # Without a project marker: the directory above the top package.
    (root / "pyproject.toml").unlink()
    assert pack.source_root(str(root / "pkg" / "sub" / "tasks.py")) == root.resolve()


def test_a_lone_module_in_the_home_directory_goes_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    (home / "script.py").write_text("X = 1\n")
    (home / "photos").mkdir()
    (home / "photos" / "big.jpg").write_bytes(b"\xff" * 1000)
    root = pack.source_root(str(home / "script.py"))
    assert root == home.resolve()
    only = pack.lone_module(root, str(home / "script.py"))
    assert only == "script.py"
    assert names(pack.pack(root, only=only)) == ["script.py"]
    # A project directory is packed whole.
    assert pack.lone_module(make_project(tmp_path / "proj").resolve(), str(tmp_path / "proj" / "helpers.py")) is None


def test_installed_modules_are_not_packed() -> None:
    assert pack.source_root(tarfile.__file__) is None  # the standard library
    assert pack.source_root(pytest.__file__) is None  # site-packages


def test_the_bundle_holds_the_source_and_none_of_the_ignored_files(tmp_path: Path) -> None:
    bundle = pack.pack(make_project(tmp_path / "proj"))
    assert names(bundle) == [
        "helpers.py",
        "pkg/__init__.py",
        "pkg/sub/__init__.py",
        "pkg/sub/tasks.py",
        "pyproject.toml",
    ]
    assert bundle.files == 5


def test_the_walk_keeps_links_inside_the_project_and_leaves_out_links_leading_out(tmp_path: Path) -> None:
    root = make_project(tmp_path / "proj")
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "secret.txt").write_text("not code")
    (outside / "deep" / "more.py").write_text("not ours")
    (root / "alias.py").symlink_to(root / "helpers.py")  # inside: packed as a file of its own
    (root / "secret.txt").symlink_to(outside / "secret.txt")  # leads out: left out
    (root / "linked").symlink_to(outside / "deep")  # a linked directory is not walked into
    (root / "pkg" / "linked_inside").symlink_to(root / "pkg" / "sub")  # nor is one inside
    (root / "dangling.py").symlink_to(root / "gone.py")  # no file behind it
    (root / "data.egg-info").mkdir()
    (root / "data.egg-info" / "PKG-INFO").write_text("x")

    assert [name for name, _ in pack.files_of(root)] == [
        "alias.py",
        "helpers.py",
        "pkg/__init__.py",
        "pkg/sub/__init__.py",
        "pkg/sub/tasks.py",
        "pyproject.toml",
    ]
    assert all(path == root / name for name, path in pack.files_of(root))


def test_a_project_is_packed_again_only_when_one_of_its_files_changed(tmp_path: Path) -> None:
    root = make_project(tmp_path / "proj")
    first = ship.packed(root)
    assert ship.packed(root) is first  # nothing changed: the bundle packed before
    (root / "helpers.py").write_text("def f():\n    return 22\n")  # another size
    changed = ship.packed(root)
    assert changed.digest != first.digest
    (root / "pkg" / "new.py").write_text("")
    added = ship.packed(root)
    assert added.digest != changed.digest and "pkg/new.py" in names(added)
    (root / "pkg" / "new.py").unlink()
    assert ship.packed(root).digest == changed.digest


def test_identical_source_gives_the_same_bytes_and_digest_wherever_and_whenever_it_is(tmp_path: Path) -> None:
    first = pack.pack(make_project(tmp_path / "a"))
    second = make_project(tmp_path / "b")
    os.utime(second / "helpers.py", (1, 1))  # other times, another place: the same bundle
    again = pack.pack(second)
    assert (again.data, again.digest) == (first.data, first.digest)
    (second / "helpers.py").write_text("def f():\n    return 2\n")
    assert pack.pack(second).digest != first.digest


def test_a_bundle_over_the_cap_is_a_clear_error_naming_the_biggest_files(tmp_path: Path) -> None:
    root = make_project(tmp_path / "proj")
    (root / "data.bin").write_bytes(os.urandom(300_000))  # random: gzip cannot shrink it
    with pytest.raises(errors.InvalidRequest, match=r"over the 0 MiB cap.*data\.bin \(0\.3 MiB\).*FANOUT_BUNDLE=0"):
        pack.pack(root, max_bytes=200_000)


def test_a_bundle_unpacks_to_the_same_files_once_per_digest(tmp_path: Path) -> None:
    bundle = pack.pack(make_project(tmp_path / "proj"))
    cache = tmp_path / "cache"
    where = unpack.install(bundle.digest, bundle.data, cache)
    assert where == cache / bundle.digest
    assert (where / "pkg" / "sub" / "tasks.py").read_text() == "X = 1\n"
    assert unpack.cached(bundle.digest, cache) == where
    assert [p.name for p in cache.iterdir()] == [bundle.digest]  # no scratch directory left behind


def test_processes_unpacking_one_bundle_at_once_both_get_it_whole(tmp_path: Path) -> None:
    bundle = pack.pack(make_project(tmp_path / "proj"))
    cache = tmp_path / "cache"
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(unpack.install(bundle.digest, bundle.data, cache)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [cache / bundle.digest] * 4
    assert [p.name for p in cache.iterdir()] == [bundle.digest]


def tar_gz(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for info, content in members:
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return raw.getvalue()


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, b""


@pytest.mark.parametrize(
    "member",
    [
        (tarfile.TarInfo("../escaped.py"), b"x"),
        (tarfile.TarInfo("pkg/../../escaped.py"), b"x"),
        (tarfile.TarInfo("/tmp/escaped.py"), b"x"),
        link("pkg/evil", "/etc/passwd"),
        link("pkg/evil", "../../escaped.py", tarfile.LNKTYPE),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink"],
)
def test_a_bundle_with_an_entry_leading_outside_is_refused_and_writes_nothing_outside(
    tmp_path: Path, member: tuple[tarfile.TarInfo, bytes]
) -> None:
    data = tar_gz((tarfile.TarInfo("ok.py"), b"fine"), member)
    digest = hashlib.sha256(data).hexdigest()
    cache = tmp_path / "deep" / "cache"
    with pytest.raises(unpack.UnsafeBundle):
        unpack.install(digest, data, cache)
    assert unpack.cached(digest, cache) is None
    assert list(cache.iterdir()) == []  # the scratch directory is gone too
    assert not (tmp_path / "deep" / "escaped.py").exists() and not (tmp_path / "escaped.py").exists()


def test_bytes_that_do_not_match_their_digest_are_refused(tmp_path: Path) -> None:
    bundle = pack.pack(make_project(tmp_path / "proj"))
    with pytest.raises(unpack.UnsafeBundle, match="do not hash"):
        unpack.install("0" * 64, bundle.data, tmp_path / "cache")


def test_activation_puts_the_bundle_paths_first_and_refuses_paths_leading_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(active, "_active", None)
    monkeypatch.setattr(active, "_active_paths", ())
    active.activate(tmp_path, ["src", "."])
    assert sys.path[:2] == [str(tmp_path / "src"), str(tmp_path)]
    assert active.resolve("src/main.py") == str(tmp_path / "src" / "main.py")
    assert active.relative_to_active(str(tmp_path / "src" / "main.py")) == "src/main.py"
    with pytest.raises(ImportError, match="outside"):
        active.resolve("../main.py")
    with pytest.raises(ImportError, match="outside"):
        active.activate(tmp_path / "other", ["../.."])


def test_runs_with_other_code_never_share_a_pool() -> None:
    def leased(digest: str) -> dpb.LeasedAction:
        spec = pb.ActionSpec(name="a", task_ref="module:m:f", environment="env", bundle=pb.CodeBundle(digest=digest))
        spec.reuse.replicas = 1
        return dpb.LeasedAction(tenant="t", run="r", spec=spec)

    one, other = leased("1" * 64), leased("2" * 64)
    assert PoolKey.of(one) != PoolKey.of(other)
    assert _fields(one) != _fields(other)
    assert PoolKey.of(one) == PoolKey.of(leased("1" * 64))


def test_a_file_that_vanishes_between_the_walk_and_the_read_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A program running in the project (a local dispatcher's logs, say) removes files while the run is packed.
    (tmp_path / "task.py").write_text("x = 1\n")
    walked = [*pack.files_of(tmp_path), ("state/output.log", tmp_path / "state" / "output.log")]
    monkeypatch.setattr(pack, "files_of", lambda root, only=None: walked)

    bundle = pack.pack(tmp_path)

    with tarfile.open(fileobj=io.BytesIO(bundle.data), mode="r:gz") as tar:
        assert tar.getnames() == ["task.py"]
