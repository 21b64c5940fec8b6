# Source this at the start of every device run, from the repository root:
#   source tools/device/setup.sh && node .devkit/smoke.mjs
# It unpacks the carried node binary to /tmp/node (and puts it on PATH), unpacks dawn.node to
# /tmp/dawn.node and links it into the carried webgpu package, installs the Vulkan loader from .gl/*.deb when the machine has none, and
# points Vulkan at the NVIDIA driver when it is there. Safe to source twice. Needs the ignored folders
# .devkit and .gl in the run's `carry` list (see tools/device/README.md).
_devkit_setup() {
  local root
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd) || return 1
  if [ ! -f "$root/.devkit/node.xz" ]; then
    echo "devkit: $root/.devkit/node.xz is missing: run tools/device/make-kit.sh here and carry .devkit" >&2
    return 1
  fi
  if [ ! -x /tmp/node ] || [ "$root/.devkit/node.xz" -nt /tmp/node ]; then
    xz -dc "$root/.devkit/node.xz" > /tmp/node.part && chmod +x /tmp/node.part && mv /tmp/node.part /tmp/node || return 1
  fi
  mkdir -p /tmp/node-bin && ln -sf /tmp/node /tmp/node-bin/node
  case ":$PATH:" in *:/tmp/node-bin:*) ;; *) export PATH="/tmp/node-bin:$PATH" ;; esac

  # dawn.node (21 MB) is unpacked to /tmp and linked in, so the carried .devkit stays small even after
  # a rehearsal of this script on the CPU machine.
  local dawn="$root/.devkit/node_modules/webgpu/dist/linux-x64/dawn.node"
  if [ -f "$dawn.xz" ]; then
    if [ ! -f /tmp/dawn.node ] || [ "$dawn.xz" -nt /tmp/dawn.node ]; then
      xz -dc "$dawn.xz" > /tmp/dawn.node.part && mv /tmp/dawn.node.part /tmp/dawn.node || return 1
    fi
    ln -sfn /tmp/dawn.node "$dawn" || return 1
  fi

  if ldconfig -p 2>/dev/null | grep 'libvulkan\.so\.1 ' >/dev/null; then
    echo "devkit: system Vulkan loader present; .gl not unpacked"
  else
    local f n=0
    for f in "$root"/.gl/*.deb; do
      [ -f "$f" ] || continue
      dpkg -x "$f" / || return 1
      n=$((n + 1))
    done
    if [ "$n" = 0 ]; then
      echo "devkit: no Vulkan loader and no .gl/*.deb: run tools/device/make-kit.sh here and carry .gl" >&2
      return 1
    fi
    ldconfig
  fi

  local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  if [ -f "$icd" ]; then export VK_DRIVER_FILES=$icd; fi
  echo "devkit: node $(/tmp/node --version) at /tmp/node; VK_DRIVER_FILES=${VK_DRIVER_FILES:-<unset: loader default>}"
}
_devkit_setup
