#!/usr/bin/env bash
# Writes seccomp-io_uring.json: a container seccomp profile that allows what systemd's
# @system-service group allows (the set deploy/systemd/ringchat.service runs under) plus
# io_uring_setup, io_uring_enter and io_uring_register, which Docker's and containerd's default
# profiles block (the shards then fall back to epoll). Everything else fails with EPERM
# (defaultErrnoRet 1), calls newer than the list too; only clone3 fails with ENOSYS, so that
# glibc falls back to clone.
# Needs systemd-analyze (systemd >= 245). Run from anywhere:
#   bash deploy/docker/make-seccomp.sh > deploy/docker/seccomp-io_uring.json
set -euo pipefail

# The namespace calls stay blocked, as in Docker's default profile: a container has no
# business making its own namespaces.
deny='^(unshare|setns)$'

expand() {
    systemd-analyze syscall-filter --no-pager "$1" | tail -n +2 | while read -r entry _; do
        case "$entry" in
            '' | '#'*) ;;
            @*) expand "$entry" ;;
            *) echo "$entry" ;;
        esac
    done
}

mapfile -t names < <({ expand @system-service; printf '%s\n' io_uring_setup io_uring_enter io_uring_register; } | grep -Ev "$deny" | sort -u)

printf '{\n'
printf '  "comment": "ringchat: systemd @system-service plus io_uring; made by deploy/docker/make-seccomp.sh",\n'
printf '  "defaultAction": "SCMP_ACT_ERRNO",\n'
printf '  "defaultErrnoRet": 1,\n'
printf '  "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],\n'
printf '  "syscalls": [\n'
printf '    {\n      "comment": "clone3: ENOSYS, so that glibc falls back to clone (as Docker does)",\n'
printf '      "names": ["clone3"],\n      "action": "SCMP_ACT_ERRNO",\n      "errnoRet": 38\n    },\n'
printf '    {\n      "names": [\n'
last=$((${#names[@]} - 1))
for i in "${!names[@]}"; do
    [[ ${names[$i]} == clone3 ]] && continue
    sep=','
    [[ $i == "$last" ]] && sep=''
    printf '        "%s"%s\n' "${names[$i]}" "$sep"
done
printf '      ],\n      "action": "SCMP_ACT_ALLOW"\n    }\n  ]\n}\n'
