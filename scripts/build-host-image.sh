#!/usr/bin/env bash
# Builds the Docker image of the host, `molecule-host:<version>` (the version of host/Cargo.toml)
# and `molecule-host:dev`, without pulling anything.
#
#   1. builds the `molecule` binary statically (glibc with crt-static; names resolve through
#      glibc's built-in `files` and `dns` sources, which need no NSS modules at run time);
#   2. makes sure busybox-static is installed (a shell, and `wget` for the health check);
#   3. lays out the image's files in a temp dir: busybox + symlinks, the host, the default
#      extension components (the non-test crates of plugins/, built by `make plugins`), the org
#      and workspace templates, the machine's CA bundle, /etc files for uid 10001;
#   4. `docker build`s a Dockerfile `FROM scratch` (which needs no pull) over two archives: the
#      files owned by root, and the data directory owned by the host's user, labelled with the
#      sha256 of both archives, the Dockerfile and the version, unless the image already carries that label.
#
# Idempotent: a second run with nothing changed only prints "... is up to date".
# Environment: MOLECULE_HOST_IMAGE (the repository, default molecule-host).
#
# MOLECULE_HOST_BINARY=<path> packs that binary instead of building the static one, with the
# shared libraries it links (from `ldd`), as `<repository>:test` only. `make test` packs the
# debug binary it has already built this way for the deploy spec: the same image layout, user,
# health check and entry point, without a second, release build of every dependency (15 to 20
# minutes on CI's two cores).
set -euo pipefail

cd "$(dirname -- "${BASH_SOURCE[0]}")/.."

repository="${MOLECULE_HOST_IMAGE:-molecule-host}"
target="x86_64-unknown-linux-gnu"
binary="${MOLECULE_HOST_BINARY:-target/${target}/release/molecule}"
components_dir="plugins/target/wasm32-wasip2/release"
label="molecule.image.host-sha256"
uid=10001
port=8080
# sh: `docker exec` and the health check's shell; wget: the health check; the rest: what an
# operator reaches for first inside a container.
tools=(sh wget id ls cat ps env grep du df mkdir rm)

log() { printf 'build-host-image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v cargo >/dev/null 2>&1 || die "cargo not found on PATH"
command -v docker >/dev/null 2>&1 || die "docker not found on PATH"

version="$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' host/Cargo.toml | head -n1)"
[[ -n "${version}" ]] || die "no version in host/Cargo.toml"

# 1. The static binary. --target keeps RUSTFLAGS away from build scripts and proc macros,
#    which must stay dynamic (the same flags as the agent's build, so the two share their deps).
#    Or the given binary and the shared libraries it links.
libraries=()
if [[ -n "${MOLECULE_HOST_BINARY:-}" ]]; then
    [[ -x "${binary}" ]] || die "MOLECULE_HOST_BINARY=${binary} is not an executable"
    tags=("${repository}:test")
    # `ldd` prints `name => /path (addr)` per library and the loader as `/path (addr)`.
    while read -r library; do
        libraries+=("${library}")
    done < <(ldd "${binary}" | grep -oE '/[^ ]+' | sort -u)
else
    log "building ${binary}"
    RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release -p molecule-host --bin molecule --target "${target}"
    [[ -x "${binary}" ]] || die "${binary} was not built"
    if ! file "${binary}" | grep -Eq 'statically linked|static-pie linked'; then
        die "${binary} is not static: $(file -b "${binary}")"
    fi
    if ldd "${binary}" 2>&1 | grep -q '=>'; then
        die "${binary} links shared libraries: $(ldd "${binary}" 2>&1 | tr '\n' ' ')"
    fi
    tags=("${repository}:dev" "${repository}:${version}")
fi

# The default components: one per crate of the plugins workspace outside testing/, named as
# the host looks them up (<crate_name>.wasm).
components=()
for manifest in plugins/*/Cargo.toml; do
    name="$(sed -n 's/^name *= *"\([^"]*\)".*/\1/p' "${manifest}" | head -n1)"
    [[ -n "${name}" ]] || die "no package name in ${manifest}"
    wasm="${components_dir}/${name//-/_}.wasm"
    [[ -f "${wasm}" ]] || die "${wasm} is missing: run \`make plugins\`"
    components+=("${wasm}")
done
((${#components[@]} > 0)) || die "no default components found under plugins/"

# 2. busybox-static.
# shellcheck source=scripts/busybox-static.sh
source scripts/busybox-static.sh

# 3. The files.
context="$(mktemp -d)"
trap 'rm -rf -- "${context}"' EXIT
rootfs="${context}/rootfs"
share="${rootfs}/opt/molecule"
mkdir -p "${rootfs}"/{bin,usr/local/bin,etc/ssl/certs,tmp} "${share}/components"
chmod 1777 "${rootfs}/tmp"
install -m 0755 "${busybox}" "${rootfs}/bin/busybox"
for tool in "${tools[@]}"; do
    ln -s busybox "${rootfs}/bin/${tool}"
done
# Symbols only make the image bigger: panics and logs name functions without them.
install -m 0755 "${binary}" "${rootfs}/usr/local/bin/molecule"
strip --strip-unneeded "${rootfs}/usr/local/bin/molecule"
for library in "${libraries[@]}"; do
    # At the path the binary asks for, with the content of what that path resolves to here.
    install -D -m 0755 "$(readlink -f "${library}")" "${rootfs}${library}"
done
install -m 0644 "${components[@]}" "${share}/components/"
cp -R org-templates workspace-templates "${share}/"
chmod -R u=rwX,go=rX "${share}"
printf 'root:x:0:0:root:/root:/bin/sh\nmolecule:x:%s:%s:molecule:/var/lib/molecule:/bin/sh\n' "${uid}" "${uid}" \
    >"${rootfs}/etc/passwd"
printf 'root:x:0:\nmolecule:x:%s:\n' "${uid}" >"${rootfs}/etc/group"
# Static glibc resolves names through its built-in files and dns sources only.
printf 'hosts: files dns\n' >"${rootfs}/etc/nsswitch.conf"
# TLS to git hosts, an embeddings API or a collector verifies against the machine's CA bundle.
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
    install -m 0644 /etc/ssl/certs/ca-certificates.crt "${rootfs}/etc/ssl/certs/ca-certificates.crt"
else
    log "warning: /etc/ssl/certs/ca-certificates.crt not found; the image trusts no CA"
fi
# The data directory is the only place the host writes. Owned by its user in the image, so a
# fresh named volume mounted there starts with that owner.
mkdir -p "${context}/data/var/lib/molecule"
chmod 0700 "${context}/data/var/lib/molecule"

# Archives with fixed owners, order and times: the same inputs give the same bytes, and the
# label below is their digest.
pack() {
    local dir="$1" owner="$2" out="$3"
    tar -C "${dir}" --sort=name --mtime=@0 --numeric-owner --owner="${owner}" --group="${owner}" \
        -cf "${out}" .
}
pack "${rootfs}" 0 "${context}/rootfs.tar"
pack "${context}/data" "${uid}" "${context}/data.tar"
rm -rf -- "${rootfs}" "${context}/data"

cat >"${context}/Dockerfile" <<EOF
FROM scratch
ADD rootfs.tar /
ADD data.tar /
ENV PATH=/usr/local/bin:/bin \\
    MOLECULE_BIND_ADDR=0.0.0.0:${port} \\
    MOLECULE_DATA_DIR=/var/lib/molecule \\
    MOLECULE_BUILTIN_EXTENSIONS_DIR=/opt/molecule/components \\
    MOLECULE_ORG__TEMPLATES_DIR=/opt/molecule/org-templates \\
    MOLECULE_RUNTIME__TEMPLATES_DIR=/opt/molecule/workspace-templates
USER ${uid}:${uid}
WORKDIR /var/lib/molecule
VOLUME /var/lib/molecule
EXPOSE ${port}
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \\
    CMD ["/bin/wget", "-q", "-O", "/dev/null", "http://127.0.0.1:${port}/health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/molecule"]
CMD ["serve"]
EOF

sha="$( (cat "${context}/rootfs.tar" "${context}/data.tar" "${context}/Dockerfile"; echo "${version}") | sha256sum | cut -d' ' -f1)"
log "content sha256 ${sha}"

# Nothing to do when the image was built from these very files.
primary="${tags[0]}"
current="$(docker image inspect --format "{{ index .Config.Labels \"${label}\" }}" "${primary}" 2>/dev/null || true)"
if [[ "${current}" == "${sha}" ]]; then
    for tag in "${tags[@]:1}"; do docker tag "${primary}" "${tag}"; done
    echo "${tags[*]} is up to date"
    docker image inspect --format '{{.Id}}' "${primary}"
    exit 0
fi

# 4. Build.
old_id="$(docker image inspect --format '{{.Id}}' "${primary}" 2>/dev/null || true)"
log "building ${tags[*]}"
tag_args=()
for tag in "${tags[@]}"; do tag_args+=(--tag "${tag}"); done
docker build --quiet \
    --label "${label}=${sha}" \
    --label "org.opencontainers.image.title=molecule-host" \
    --label "org.opencontainers.image.description=Molecule host: a control plane for AI-agent orgs" \
    --label "org.opencontainers.image.version=${version}" \
    "${tag_args[@]}" \
    "${context}" >/dev/null
new_id="$(docker image inspect --format '{{.Id}}' "${primary}")"
# The previous build is now untagged; drop it unless a container still uses it.
if [[ -n "${old_id}" && "${old_id}" != "${new_id}" ]]; then
    docker image rm "${old_id}" >/dev/null 2>&1 || true
fi
log "${tags[*]} built ($(docker image inspect --format '{{.Size}}' "${primary}") bytes)"
echo "${new_id}"
