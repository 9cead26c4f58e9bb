#!/usr/bin/env bash
# Build a small Python 3.11 base image WITHOUT any registry: a rootfs assembled from the host's
# own Debian 12 packages (python3.11 and its standard library, venv/ensurepip with Debian's pip
# and setuptools wheels, libc6 and libgcc-s1 whole, as manylinux wheels expect), the shared
# libraries they link, the CA certificates, a static busybox for the Dockerfile's RUN steps,
# then a FROM-scratch `docker build` of that tar.
# It stands in for python:3.11-slim-bookworm (same Debian release, same Python minor version).
#
# Usage: scripts/build-python-base.sh [--force] [IMAGE]
#   IMAGE defaults to $TLSBRIDGE_PYTHON_IMAGE or tlsbridge-test/python:3.11.
#   Without --force nothing is done when the image already exists (it is cached).
#
# Packages missing on the host are fetched with `apt-get download` and unpacked with `dpkg -x`
# (nothing is installed on the host).
set -euo pipefail

force=0
image=${TLSBRIDGE_PYTHON_IMAGE:-tlsbridge-test/python:3.11}
for arg in "$@"; do
  case $arg in
    --force|-f) force=1 ;;
    -h|--help) sed -n '2,/^set -euo/{/^#/p}' "$0"; exit 0 ;;
    -*) echo "unknown option: $arg" >&2; exit 2 ;;
    *) image=$arg ;;
  esac
done

if [ "$force" = 0 ] && docker image inspect "$image" >/dev/null 2>&1; then
  echo "python base image: $image present"
  exit 0
fi

start=$(date +%s.%N)
old_id=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
root=$tmp/rootfs
py=python3.11
pkgs=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib python3.11-venv
      python3-pip-whl python3-setuptools-whl ca-certificates libc6 libgcc-s1)

# --- skeleton (merged /usr like Debian 12) -------------------------------------------------
mkdir -p "$root"/usr/{bin,sbin,lib,lib64} "$root"/etc/ssl/certs "$root"/usr/lib/ssl \
         "$root"/tmp "$root"/root "$root"/run "$root"/var/tmp "$root"/dev "$root"/proc "$root"/sys
for d in bin sbin lib lib64; do ln -s "usr/$d" "$root/$d"; done
chmod 1777 "$root/tmp" "$root/var/tmp"

# Copy a host file to the same path in the rootfs. Paths under the merged-/usr aliases (/lib,
# /bin, ...) go to their /usr location, and an existing destination is removed first: cp must
# never write through a symlink in the rootfs that points back into the host.
put() {
  local f=$1 mode=$2 d=$1
  case $f in /lib/*|/lib64/*|/bin/*|/sbin/*) d=/usr$f ;; esac
  mkdir -p "$root$(dirname "$d")"
  cp "$mode" --remove-destination "$f" "$root$d"
}

# --- the packages' files (host copy when installed, else the .deb) -------------------------
skip='^/usr/share/(doc|man|lintian|bug|binfmts|locale|i18n)/|/gconv/|^/usr/lib/python3\.11/(test|idlelib|tkinter|turtledemo|lib2to3/tests)(/|$)|^/usr/lib/binfmt\.d/'
for p in "${pkgs[@]}"; do
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    dpkg -L "$p" | grep -Ev "$skip" | while IFS= read -r f; do
      if [ -f "$f" ] || [ -L "$f" ]; then
        put "$f" -a
      fi
    done
  else
    echo "python base image: $p not installed on the host, fetching the .deb"
    mkdir -p "$tmp/debs"
    (cd "$tmp/debs" && { apt-get download -qq "$p" >/dev/null 2>&1 || { apt-get update -qq && apt-get download -qq "$p"; }; })
    dpkg -x "$tmp"/debs/"$p"_*.deb "$root"
  fi
done
rm -rf "$root"/usr/share/doc "$root"/usr/share/man
ln -sf "$py" "$root/usr/bin/python3"
[ -x "$root/usr/bin/$py" ] || { echo "python base image: no /usr/bin/$py" >&2; exit 1; }

# --- shared libraries: everything the interpreter and its extension modules link -------------
objs=("/usr/bin/$py" /usr/lib/$py/lib-dynload/*.so)
libs=$(for o in "${objs[@]}"; do ldd "$o" 2>/dev/null; done \
       | awk '$2 == "=>" && $3 ~ /^\//{print $3} $1 ~ /^\//{print $1}' | sort -u)
for lib in $libs; do
  put "$lib" -L
done

# --- CA certificates for Python's ssl and OpenSSL's default paths --------------------------
if [ ! -s "$root/etc/ssl/certs/ca-certificates.crt" ]; then
  cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
fi
ln -sfn /etc/ssl/certs "$root/usr/lib/ssl/certs"
ln -sf /etc/ssl/certs/ca-certificates.crt "$root/usr/lib/ssl/cert.pem"

# --- users, groups, name service ---------------------------------------------------------
cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
PASSWD
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
printf 'PRETTY_NAME="tlsbridge test base (Debian 12 python3.11 from the host)"\n' >"$root/etc/os-release"

# --- a shell and the usual tools for RUN steps (static busybox only) ---------------------
if [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; then
  cp /bin/busybox "$root/usr/bin/busybox"
  for applet in $("$root/usr/bin/busybox" --list); do
    [ -e "$root/usr/bin/$applet" ] || [ -e "$root/usr/sbin/$applet" ] || ln -s busybox "$root/usr/bin/$applet"
  done
else
  echo "python base image: needs a static busybox (apt-get install busybox-static)" >&2
  exit 1
fi

# --- bytecode for the standard library (the host's packages leave that to postinst) -------
chroot "$root" "/usr/bin/$py" -m compileall -q -j 0 "/usr/lib/$py" >/dev/null 2>&1 || true
chroot "$root" "/usr/bin/$py" -c 'import ssl, sqlite3, ctypes, ensurepip, venv, zlib, lzma, bz2' \
  || { echo "python base image: the interpreter is incomplete inside the rootfs" >&2; exit 1; }

ctx=$tmp/context
mkdir -p "$ctx"
tar -C "$root" --numeric-owner --owner=0 --group=0 -cf "$ctx/rootfs.tar" .
cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
ADD rootfs.tar /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
LABEL org.tlsbridge.test=python
CMD ["python3"]
DOCKERFILE
DOCKER_BUILDKIT=0 docker build --force-rm -q -t "$image" "$ctx" >"$tmp/build.log" 2>&1 \
  || { cat "$tmp/build.log" >&2; exit 1; }

new_id=$(docker image inspect -f '{{.Id}}' "$image")
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
  docker rmi "$old_id" >/dev/null 2>&1 || true
fi
size=$(docker image inspect -f '{{.Size}}' "$image")
end=$(date +%s.%N)
awk -v i="$image" -v s="$size" -v a="$start" -v b="$end" \
  'BEGIN{printf "python base image: built %s (%.1f MB) in %.1f s\n", i, s/1e6, b-a}'
