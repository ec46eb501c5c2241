# Sourced by the image builds (build-agent-image.sh, build-host-image.sh), which define `log` and
# `die`: installs Debian's busybox-static when missing (apt-get update only when the first
# install fails) and sets `busybox` to its binary, checked to be static, for an image's shell
# and tools.
if ! dpkg -s busybox-static >/dev/null 2>&1; then
    log "installing busybox-static"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y busybox-static; then
        apt-get update
        apt-get install -y busybox-static
    fi
fi
busybox="$(dpkg -L busybox-static | grep -E '/bin/busybox$' | head -n1)"
[[ -n "${busybox}" && -x "${busybox}" ]] || die "busybox-static is installed but its binary was not found"
file -L "${busybox}" | grep -Eq 'statically linked|static-pie linked' || die "${busybox} is not static"
