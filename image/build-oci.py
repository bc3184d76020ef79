#!/usr/bin/env python3
"""Builds keyhook's container image as an OCI image layout, without a
container engine: one layer holding the binary, the shared libraries it
links (from this Debian machine, as the distroless cc-debian12 base would
carry them), CA certificates, and /etc/passwd and /etc/group naming the
non-root user 65532. No shell, no package manager, nothing else.

    python3 image/build-oci.py [BINARY] [OUT]

BINARY defaults to target/dist/keyhook (`cargo build --profile dist`), OUT
to target/oci/keyhook. The layout is reproducible (fixed times, sorted
entries) and can be pushed with `skopeo copy oci:OUT:TAG docker://...`,
or loaded with `podman load -i` after `tar -C OUT -cf image.tar .`.
The image is for this machine's architecture.
"""

import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile

NONROOT = 65532
ENTRYPOINT = "/usr/local/bin/keyhook"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# Every file gets this time, so the same inputs give the same digest.
EPOCH = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))

PASSWD = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
GROUP = "root:x:0:\nnonroot:x:65532:\n"
NSSWITCH = "passwd: files\ngroup: files\nhosts: files dns\n"

ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64"}


def fail(message):
    sys.exit(f"build-oci: {message}")


def shared_libraries(binary):
    """The files the dynamic loader maps for `binary`, as ldd names them."""
    try:
        out = subprocess.run(
            ["ldd", binary], check=True, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        fail(f"ldd {binary}: {e}")
    paths = []
    for line in out.splitlines():
        line = line.strip()
        if "=>" in line:
            target = line.split("=>", 1)[1].strip().split(" ")[0]
        else:
            target = line.split(" ")[0]
        if target.startswith("/"):
            paths.append(target)
        elif "not found" in line:
            fail(f"{binary} links a library this machine lacks: {line}")
    return paths


def stripped_copy(binary, work):
    """The binary without debug information (a debug build is mostly that)."""
    copy = os.path.join(work, "keyhook")
    shutil.copyfile(binary, copy)
    if shutil.which("strip"):
        subprocess.run(["strip", "--strip-debug", copy], check=True)
    return copy


class Layer:
    """A tar layer with fixed owners, modes and times."""

    def __init__(self):
        self.buffer = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buffer, mode="w", format=tarfile.PAX_FORMAT)
        self.dirs = set()

    def _info(self, name, kind, mode, uid=0):
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.mtime = EPOCH
        info.uid = info.gid = uid
        info.uname = info.gname = "nonroot" if uid == NONROOT else "root"
        return info

    def directory(self, path, mode=0o755, uid=0):
        path = path.strip("/")
        parent = os.path.dirname(path)
        if parent and parent not in self.dirs:
            self.directory(parent)
        if path not in self.dirs:
            self.dirs.add(path)
            self.tar.addfile(self._info(path, tarfile.DIRTYPE, mode, uid))

    def file(self, path, data, mode=0o644):
        path = path.strip("/")
        self.directory(os.path.dirname(path))
        info = self._info(path, tarfile.REGTYPE, mode)
        info.size = len(data)
        self.tar.addfile(info, io.BytesIO(data))

    def finish(self):
        self.tar.close()
        raw = self.buffer.getvalue()
        compressed = io.BytesIO()
        with gzip.GzipFile(fileobj=compressed, mode="wb", mtime=EPOCH, compresslevel=6) as gz:
            gz.write(raw)
        return raw, compressed.getvalue()


def blob(out, data):
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(out, "blobs", "sha256", digest)
    with open(path, "wb") as f:
        f.write(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def version_of(binary):
    out = subprocess.run([binary, "--version"], capture_output=True, text=True)
    words = out.stdout.split()
    return words[1] if out.returncode == 0 and len(words) == 2 else "unknown"


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/dist/keyhook"
    out = sys.argv[2] if len(sys.argv) > 2 else "target/oci/keyhook"
    if not os.path.isfile(binary):
        fail(f"{binary} not found: build it first (cargo build --profile dist)")
    if not os.path.isfile(CA_BUNDLE):
        fail(f"{CA_BUNDLE} not found: apt-get install ca-certificates")
    architecture = ARCHITECTURES.get(platform.machine())
    if architecture is None:
        fail(f"no OCI name for architecture {platform.machine()}")
    version = version_of(binary)

    layer = Layer()
    with tempfile.TemporaryDirectory() as work:
        with open(stripped_copy(binary, work), "rb") as f:
            layer.file(ENTRYPOINT, f.read(), 0o755)
    for library in shared_libraries(binary):
        with open(os.path.realpath(library), "rb") as f:
            layer.file(library, f.read(), 0o755)
    with open(CA_BUNDLE, "rb") as f:
        layer.file(CA_BUNDLE, f.read())
    layer.file("/etc/passwd", PASSWD.encode())
    layer.file("/etc/group", GROUP.encode())
    layer.file("/etc/nsswitch.conf", NSSWITCH.encode())
    layer.directory("/tmp", 0o1777)
    # The working directory: `serve` standalone writes ./certs and ./secrets.
    layer.directory("/home/nonroot", 0o700, NONROOT)
    raw, compressed = layer.finish()

    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(os.path.join(out, "blobs", "sha256"))
    layer_blob = blob(out, compressed)
    config = {
        "created": "1970-01-01T00:00:00Z",
        "architecture": architecture,
        "os": "linux",
        "config": {
            "User": f"{NONROOT}:{NONROOT}",
            "Entrypoint": [ENTRYPOINT],
            "Cmd": ["serve"],
            "WorkingDir": "/home/nonroot",
            "Env": ["PATH=/usr/local/bin"],
            "ExposedPorts": {"9443/tcp": {}, "8081/tcp": {}},
            "Labels": {
                "org.opencontainers.image.title": "keyhook",
                "org.opencontainers.image.version": version,
            },
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": [f"sha256:{hashlib.sha256(raw).hexdigest()}"],
        },
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "image/build-oci.py"}],
    }
    config_blob = blob(out, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_blob},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer_blob}],
    }
    manifest_blob = blob(out, json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **manifest_blob,
                "platform": {"architecture": architecture, "os": "linux"},
                "annotations": {"org.opencontainers.image.ref.name": version},
            }
        ],
    }
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f, sort_keys=True)
    with open(os.path.join(out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    print(f"build-oci: {out} (keyhook {version}, linux/{architecture}, "
          f"layer {len(compressed) / 2**20:.1f} MiB, {manifest_blob['digest']})")


if __name__ == "__main__":
    main()
