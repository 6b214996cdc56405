#!/usr/bin/env python3
"""Builds images and OCI artifacts from directory trees and pushes them to a
registry over the distribution HTTP API (plain HTTP, no auth: the loopback
docker-registry that test/conformance/images.sh starts).

  oci_push.py image --registry HOST:PORT --repo REPO --tag T [--tag T ...]
      --layer DIR [--layer DIR ...] [--chown PATH=UID:GID ...]
      [--config JSON] [--arch GOARCH] [--variant V] [--list]
  oci_push.py artifact --registry HOST:PORT --repo REPO --tag T
      [--artifact-type TYPE] --file TITLE=PATH [--file ...]

Layers are built here rather than with umoci so that they are exactly what
an image build would produce and the same on every run: entries sorted,
hard links kept as tar hard links (busybox applets are hard links of
/bin/busybox in upstream images), owner root unless --chown says otherwise
(so running as any user gives the same image), fixed mtimes, gzip without a
timestamp. Identical inputs give identical digests, so a stand-in pushed
under two names (pause from registry.k8s.io and k8s.gcr.io) is one image.

Images use Docker schema 2 media types, as `docker push` and
`docker manifest create` gave the upstream ones; --list wraps the manifest
in a one-platform manifest list, as the upstream multi-arch tags are.

An artifact is shaped as `oras push REF TITLE...` (oras 1.1+, image-spec
v1.1) makes it: an OCI image manifest with artifactType (default
application/vnd.unknown.artifact.v1), the empty config
application/vnd.oci.empty.v1+json `{}` (inlined as data), one layer per
file holding the file's raw bytes (not a tar), media type
application/vnd.oci.image.layer.v1.tar, titled with
org.opencontainers.image.title, and an org.opencontainers.image.created
annotation.

Prints one line per pushed tag: REPO:TAG DIGEST.
"""
import argparse
import gzip
import hashlib
import http.client
import io
import json
import os
import stat
import sys
import tarfile
import urllib.parse

# Fixed timestamp for layer entries and configs, so rebuilds are identical.
EPOCH = 1704067200  # 2024-01-01T00:00:00Z
CREATED = "2024-01-01T00:00:00Z"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
TITLE = "org.opencontainers.image.title"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def compact(obj):
    """JSON as Go's encoding/json writes it: compact, fields in the order given."""
    return json.dumps(obj, separators=(",", ":")).encode()


class Registry:
    def __init__(self, host):
        self.host = host

    def request(self, method, url, body=None, headers=None):
        conn = http.client.HTTPConnection(self.host, timeout=60)
        try:
            conn.request(method, url, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def push_blob(self, repo, data):
        digest = sha256(data)
        status, _, _ = self.request("HEAD", f"/v2/{repo}/blobs/{digest}")
        if status == 200:
            return digest
        status, headers, body = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        if status != 202:
            sys.exit(f"starting an upload to {repo}: HTTP {status}: {body[:300]!r}")
        # Location may be absolute or relative; keep its path and query
        # (the upload state) and add the digest, which completes a monolithic upload.
        loc = urllib.parse.urlsplit(headers.get("Location") or headers.get("location"))
        query = (loc.query + "&" if loc.query else "") + urllib.parse.urlencode({"digest": digest})
        status, _, body = self.request(
            "PUT", f"{loc.path}?{query}", body=data,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))})
        if status != 201:
            sys.exit(f"uploading {digest} to {repo}: HTTP {status}: {body[:300]!r}")
        return digest

    def push_manifest(self, repo, ref, media_type, data):
        status, _, body = self.request(
            "PUT", f"/v2/{repo}/manifests/{ref}", body=data,
            headers={"Content-Type": media_type, "Content-Length": str(len(data))})
        if status != 201:
            sys.exit(f"pushing manifest {repo}:{ref}: HTTP {status}: {body[:500]!r}")
        return sha256(data)


def tar_layer(root, owners):
    """An uncompressed layer tar of the tree at root (root itself not an entry)."""
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            paths.append(os.path.relpath(os.path.join(dirpath, name), root))
    # Component-wise order: a directory comes before its contents, and the
    # first name of a hard-linked file is the one stored as a regular file.
    paths.sort(key=lambda p: p.split(os.sep))
    buf = io.BytesIO()
    seen = {}
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in paths:
            full = os.path.join(root, rel)
            st = os.lstat(full)
            info = tarfile.TarInfo(rel.replace(os.sep, "/"))
            info.mode = stat.S_IMODE(st.st_mode)
            info.uid, info.gid = owners.get(info.name, (0, 0))
            info.uname = info.gname = ""
            info.mtime = EPOCH
            data = None
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
            elif stat.S_ISLNK(st.st_mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(full)
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in seen:
                    info.type = tarfile.LNKTYPE
                    info.linkname = seen[key]
                else:
                    seen[key] = info.name
                    info.type = tarfile.REGTYPE
                    info.size = st.st_size
                    data = open(full, "rb")
            else:
                sys.exit(f"{full}: only directories, regular files and symlinks go into a layer")
            tar.addfile(info, data)
            if data:
                data.close()
    return buf.getvalue()


def platform(args):
    p = {"architecture": args.arch, "os": "linux"}
    if args.variant:
        p["variant"] = args.variant
    return p


def cmd_image(args):
    reg = Registry(args.registry)
    owners = {}
    for spec in args.chown:
        path, ids = spec.split("=", 1)
        uid, gid = ids.split(":")
        owners[path.strip("/")] = (int(uid), int(gid))

    layers, diff_ids, history = [], [], []
    for d in args.layer:
        tar = tar_layer(d, owners)
        blob = gzip.compress(tar, mtime=0)
        diff_ids.append(sha256(tar))
        layers.append({"mediaType": DOCKER_LAYER, "size": len(blob),
                       "digest": reg.push_blob(args.repo, blob)})
        history.append({"created": CREATED,
                        "created_by": f"crius conformance stand-in: {os.path.basename(os.path.normpath(d))}"})

    config = {**platform(args),
              "config": json.loads(args.config),
              "created": CREATED,
              "history": history,
              "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    config_blob = compact(config)
    manifest = compact({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "size": len(config_blob),
                   "digest": reg.push_blob(args.repo, config_blob)},
        "layers": layers,
    })
    media_type, top = DOCKER_MANIFEST, manifest
    if args.list:
        # The platform manifest goes in by digest first: a list may only
        # name manifests the repository already has.
        reg.push_manifest(args.repo, sha256(manifest), DOCKER_MANIFEST, manifest)
        media_type, top = DOCKER_LIST, compact({
            "schemaVersion": 2,
            "mediaType": DOCKER_LIST,
            "manifests": [{"mediaType": DOCKER_MANIFEST, "size": len(manifest),
                           "digest": sha256(manifest), "platform": platform(args)}],
        })
    for tag in args.tag:
        print(f"{args.repo}:{tag} {reg.push_manifest(args.repo, tag, media_type, top)}")


def cmd_artifact(args):
    reg = Registry(args.registry)
    empty = b"{}"
    layers = []
    for spec in args.file:
        title, path = spec.split("=", 1)
        with open(path, "rb") as f:
            data = f.read()
        layers.append({"mediaType": OCI_LAYER_TAR, "digest": reg.push_blob(args.repo, data),
                       "size": len(data), "annotations": {TITLE: title}})
    manifest = compact({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": args.artifact_type,
        "config": {"mediaType": OCI_EMPTY, "digest": reg.push_blob(args.repo, empty),
                   "size": len(empty), "data": "e30="},
        "layers": layers,
        "annotations": {"org.opencontainers.image.created": CREATED},
    })
    for tag in args.tag:
        print(f"{args.repo}:{tag} {reg.push_manifest(args.repo, tag, OCI_MANIFEST, manifest)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("image", "artifact"):
        p = sub.add_parser(name)
        p.add_argument("--registry", required=True, help="HOST:PORT, plain HTTP")
        p.add_argument("--repo", required=True, help="repository path, e.g. gcr.io/ns/name")
        p.add_argument("--tag", action="append", required=True)
    img = sub.choices["image"]
    img.add_argument("--layer", action="append", required=True, help="directory tree, one per layer, bottom first")
    img.add_argument("--chown", action="append", default=[], help="PATH=UID:GID for one entry (default 0:0)")
    img.add_argument("--config", default="{}", help="the image config's \"config\" object, as JSON")
    img.add_argument("--arch", default="amd64", help="GOARCH")
    img.add_argument("--variant", default="")
    img.add_argument("--list", action="store_true", help="push a one-platform manifest list")
    art = sub.choices["artifact"]
    art.add_argument("--artifact-type", default="application/vnd.unknown.artifact.v1")
    art.add_argument("--file", action="append", required=True, help="TITLE=PATH, one layer each, in order")
    args = ap.parse_args()
    {"image": cmd_image, "artifact": cmd_artifact}[args.cmd](args)


if __name__ == "__main__":
    main()
