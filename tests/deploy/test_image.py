"""The container image. No Docker engine runs here, so the Dockerfile is checked by
hadolint and BuildKit's own parser, and the root filesystem it would contain is built by
the same script (deploy/image/build-static.sh) and run in an empty, read-only root as
65532:65532: the image's run-time conditions without the engine.

The build is a release build of the whole binary (minutes): opt in with
MCP_TUNNEL_IMAGE_TEST=1, or point MCP_TUNNEL_ROOTFS at a root filesystem the script
already built."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dockerfile
import pytest
import yaml

import proxyrun
from k8s import ROOT

DOCKERFILE = ROOT / "Dockerfile"
BUILD_SCRIPT = ROOT / "deploy" / "image" / "build-static.sh"
HADOLINT = Path(sys.executable).parent / "hadolint"


def stages() -> list[list[dockerfile.Command]]:
    out: list[list[dockerfile.Command]] = []
    for cmd in dockerfile.parse_file(str(DOCKERFILE)):
        if cmd.cmd == "FROM":
            out.append([])
        if out:
            out[-1].append(cmd)
    return out


def args() -> dict[str, str]:
    return dict(c.value[0].split("=", 1) for c in dockerfile.parse_file(str(DOCKERFILE)) if c.cmd == "ARG" and "=" in c.value[0])


def test_hadolint_finds_nothing():
    out = subprocess.run([str(HADOLINT), "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_multi_stage_with_a_distroless_static_runtime():
    build, runtime = stages()
    assert build[0].value[-2:] == ("AS", "build")
    assert args()["RUNTIME_IMAGE"].startswith("gcr.io/distroless/static-debian12:nonroot")
    assert runtime[0].value == ("${RUNTIME_IMAGE}",)
    # Nothing runs in the runtime stage: it has no shell to run it with.
    assert not [c for c in runtime if c.cmd in ("RUN", "SHELL")]
    copies = [c for c in runtime if c.cmd == "COPY"]
    assert [(c.flags, c.value) for c in copies] == [(("--from=build",), ("/rootfs/", "/"))]


def test_non_root_and_exec_form_entrypoint():
    _, runtime = stages()
    (user,) = [c for c in runtime if c.cmd == "USER"]
    assert user.value == ("65532:65532",)
    (entry,) = [c for c in runtime if c.cmd == "ENTRYPOINT"]
    assert entry.json and entry.value == ("/usr/local/bin/mcp-tunnel",)
    (cmd,) = [c for c in runtime if c.cmd == "CMD"]
    assert cmd.json


def test_the_build_stage_runs_the_tested_script():
    build, _ = stages()
    runs = [c for c in build if c.cmd == "RUN"]
    assert [r.value for r in runs] == [("deploy/image/build-static.sh /rootfs",)]
    script = BUILD_SCRIPT.read_text()
    assert "--locked" in script and "+crt-static" in script
    assert os.access(BUILD_SCRIPT, os.X_OK)


def test_dockerignore_keeps_secrets_and_outputs_out_of_the_context():
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    for pattern in (".git", ".venv", "target", "**/.env"):
        assert pattern in lines
    # Everything under deploy/ is out except the build script's folder.
    assert lines.index("deploy/*") < lines.index("!deploy/image")
    for needed in ("Cargo.toml", "Cargo.lock", "crates"):
        assert needed not in lines


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory) -> Path:
    given = os.environ.get("MCP_TUNNEL_ROOTFS")
    if given:
        return Path(given)
    if os.environ.get("MCP_TUNNEL_IMAGE_TEST") != "1":
        pytest.skip("release build of the image's root filesystem: set MCP_TUNNEL_IMAGE_TEST=1 (or MCP_TUNNEL_ROOTFS)")
    out = tmp_path_factory.mktemp("rootfs")
    env = {**os.environ, "CARGO_TARGET_DIR": os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target" / "image"))}
    subprocess.run([str(BUILD_SCRIPT), str(out)], check=True, env=env, timeout=3600)
    return out


def test_rootfs_is_one_static_binary_and_the_setup_link(rootfs):
    binary = rootfs / "usr" / "local" / "bin" / "mcp-tunnel"
    assert os.readlink(rootfs / "setup") == "/usr/local/bin/mcp-tunnel"
    headers = subprocess.run(["readelf", "-lW", str(binary)], capture_output=True, text=True, check=True).stdout
    assert "INTERP" not in headers
    dynamic = subprocess.run(["readelf", "-dW", str(binary)], capture_output=True, text=True, check=True).stdout
    assert "NEEDED" not in dynamic
    for path in (rootfs, rootfs / "usr", rootfs / "usr" / "local", binary.parent, binary):
        assert path.stat().st_mode & 0o777 == 0o755, path


def test_runs_in_an_empty_read_only_root_as_65532(rootfs, tmp_path):
    """The proxy from the image's root filesystem, alone in a read-only root (plus the
    /etc/hosts and mounts a container runtime provides), serving an MCP server it finds
    by name: static glibc, name resolution, TLS and MCP all work without a libc on disk."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) for a private mount namespace")
    root = tmp_path / "root"
    shutil.copytree(rootfs, root, symlinks=True)
    (root / "etc").mkdir()
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    data = root / "data"
    data.mkdir()
    certs = proxyrun.openssl_certs(data)
    for path in data.iterdir():
        os.chown(path, 65532, 65532)
        path.chmod(0o600 if path.suffix == ".key" else 0o644)
    with proxyrun.mcp_server(tmp_path) as port:
        cfg = proxyrun.local_config(
            {
                "tunnel_domain": proxyrun.DOMAIN,
                "routes": {"mcp": f"http://localhost:{port}"},
                "upstream": {"allowed_ips": ["127.0.0.1/32"]},
            },
            {"cert": Path("/data/tls.crt"), "key": Path("/data/tls.key"), "ca": Path("/data/ca.crt")},
        )
        (root / "config.yaml").write_text(yaml.safe_dump(cfg))
        script = (
            f"mount --bind {root} {root} && mount -o remount,ro,bind {root} && "
            f"exec chroot --userspec=65532:65532 {root} /usr/local/bin/mcp-tunnel proxy --config /config.yaml"
        )
        probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
        if probe.returncode != 0:
            pytest.skip(f"no private mount namespace here: {probe.stderr.decode().strip()}")
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
        with proxyrun.proxy(argv, tmp_path, cfg) as p:
            tools = proxyrun.call_list(f"mcp.{proxyrun.DOMAIN}", p.listen, certs["ca"])
            assert "echo" in tools
            assert '"request completed"' in p.log.read_text()
            assert p.stop() == 0
