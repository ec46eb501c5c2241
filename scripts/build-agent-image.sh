#!/usr/bin/env bash
# Builds the Docker image of the reference agent, `molecule-agent:dev`, without pulling anything.
#
#   1. builds molecule-agent as a static binary (glibc with crt-static: the agent only connects
#      to IP literals, so it needs no NSS modules at run time);
#   2. makes sure busybox-static is installed (for a shell and a few tools inside the image);
#   3. lays out a rootfs in a temp dir: busybox + symlinks, the agent, /tmp, /configs, /etc;
#   4. `docker import`s it, labelled with the binary's sha256, unless the existing image already
#      carries that label.
#
# Idempotent: a second run with an unchanged binary only prints "... is up to date".
# Environment: MOLECULE_AGENT_IMAGE (default molecule-agent:dev).
set -euo pipefail

cd "$(dirname -- "${BASH_SOURCE[0]}")/.."

image="${MOLECULE_AGENT_IMAGE:-molecule-agent:dev}"
target="x86_64-unknown-linux-gnu"
binary="target/${target}/release/molecule-agent"
label="molecule.image.agent-sha256"
# grep, kill: a terminal session's processes are found by their environment and killed when it
# closes; ps, stty: what an operator reaches for first in a terminal.
tools=(sh cat ls rm mkdir tar find sha256sum mv cp chmod sleep kill wc env grep ps stty)

log() { printf 'build-agent-image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v cargo >/dev/null 2>&1 || die "cargo not found on PATH"
command -v docker >/dev/null 2>&1 || die "docker not found on PATH"

# 1. The static binary. --target keeps RUSTFLAGS away from build scripts and proc macros,
#    which must stay dynamic.
log "building ${binary}"
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release -p molecule-agent --target "${target}"
[[ -x "${binary}" ]] || die "${binary} was not built"
if ! file "${binary}" | grep -Eq 'statically linked|static-pie linked'; then
    die "${binary} is not static: $(file -b "${binary}")"
fi
if ldd "${binary}" 2>&1 | grep -q '=>'; then
    die "${binary} links shared libraries: $(ldd "${binary}" 2>&1 | tr '\n' ' ')"
fi
sha="$(sha256sum "${binary}" | cut -d' ' -f1)"
log "binary sha256 ${sha} ($(du -h "${binary}" | cut -f1))"
# The label covers the tool list too, so adding a tool rebuilds the image.
sha="$(printf '%s %s\n' "${sha}" "${tools[*]}" | sha256sum | cut -d' ' -f1)"

# Nothing to do when the image was built from this very binary and tool list.
current="$(docker image inspect --format "{{ index .Config.Labels \"${label}\" }}" "${image}" 2>/dev/null || true)"
if [[ "${current}" == "${sha}" ]]; then
    echo "${image} is up to date"
    docker image inspect --format '{{.Id}}' "${image}"
    exit 0
fi

# 2. busybox-static: a shell and basic tools for `docker exec` and the host's file operations.
# shellcheck source=scripts/busybox-static.sh
source scripts/busybox-static.sh

# 3. The rootfs.
rootfs="$(mktemp -d)"
trap 'rm -rf -- "${rootfs}"' EXIT
mkdir -p "${rootfs}"/{bin,usr/local/bin,etc,configs,root,tmp}
chmod 1777 "${rootfs}/tmp"
chmod 0700 "${rootfs}/root"
install -m 0755 "${busybox}" "${rootfs}/bin/busybox"
for tool in "${tools[@]}"; do
    ln -s busybox "${rootfs}/bin/${tool}"
done
install -m 0755 "${binary}" "${rootfs}/usr/local/bin/molecule-agent"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"${rootfs}/etc/passwd"
printf 'root:x:0:\n' >"${rootfs}/etc/group"
# Static glibc resolves names through its built-in files and dns sources only.
printf 'hosts: files dns\n' >"${rootfs}/etc/nsswitch.conf"

# 4. Import. Owners are normalised to root so the image does not depend on who ran this.
old_id="$(docker image inspect --format '{{.Id}}' "${image}" 2>/dev/null || true)"
log "importing ${image}"
tar -C "${rootfs}" --numeric-owner --owner=0 --group=0 -c . |
    docker import \
        --change 'ENTRYPOINT ["/usr/local/bin/molecule-agent"]' \
        --change 'ENV PATH=/usr/local/bin:/bin' \
        --change 'EXPOSE 8000' \
        --change "LABEL ${label}=${sha}" \
        - "${image}" >/dev/null
new_id="$(docker image inspect --format '{{.Id}}' "${image}")"
# The previous build is now untagged; drop it unless a container still uses it.
if [[ -n "${old_id}" && "${old_id}" != "${new_id}" ]]; then
    docker image rm "${old_id}" >/dev/null 2>&1 || true
fi
log "${image} built ($(docker image inspect --format '{{.Size}}' "${image}") bytes)"
echo "${new_id}"
