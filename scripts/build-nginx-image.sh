#!/usr/bin/env bash
# Build the nginx test image WITHOUT any registry: a rootfs assembled from Debian's nginx
# binary, the shared libraries it links, /etc/nginx support files, a minimal passwd/group,
# a static busybox (for `docker exec C sh`), then a FROM-scratch `docker build` of that tar
# (no registry: `docker import --change` of Docker 20.10 refuses STOPSIGNAL).
#
# Usage: scripts/build-nginx-image.sh [--force] [IMAGE]
#   IMAGE defaults to $TLSBRIDGE_NGINX_IMAGE or tlsbridge-test/nginx:latest.
#   Without --force nothing is done when the image already exists.
#
# The nginx binary comes from the host (/usr/sbin/nginx, package nginx / nginx-light);
# if it is absent, the Debian packages nginx + nginx-common are fetched with
# `apt-get download` and unpacked with `dpkg -x` (nothing is installed on the host).
#
# Image layout: nginx.conf includes /etc/nginx/conf.d/*.conf inside http{};
# conf.d/default.conf is a plain port-80 server (hidden when a test mounts its own conf.d).
# /var/log/nginx/access.log -> /dev/stdout, error.log -> /dev/stderr.
set -euo pipefail

force=0
image=${TLSBRIDGE_NGINX_IMAGE:-tlsbridge-test/nginx:latest}
for arg in "$@"; do
  case $arg in
    --force|-f) force=1 ;;
    -h|--help) sed -n '2,/^set -euo/{/^#/p}' "$0"; exit 0 ;;
    -*) echo "unknown option: $arg" >&2; exit 2 ;;
    *) image=$arg ;;
  esac
done

if [ "$force" = 0 ] && docker image inspect "$image" >/dev/null 2>&1; then
  echo "nginx image: $image present"
  exit 0
fi

start=$(date +%s.%N)
old_id=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
root=$tmp/rootfs

# --- where nginx and its support files come from ---------------------------------------
nginx_bin=/usr/sbin/nginx
nginx_etc=/etc/nginx
if [ ! -x "$nginx_bin" ] || [ ! -f "$nginx_etc/mime.types" ]; then
  echo "nginx image: no host nginx, fetching Debian packages nginx nginx-common"
  mkdir -p "$tmp/debs" "$tmp/pkg"
  if ! (cd "$tmp/debs" && apt-get download -qq nginx nginx-common >/dev/null 2>&1); then
    apt-get update -qq
    (cd "$tmp/debs" && apt-get download -qq nginx nginx-common)
  fi
  for deb in "$tmp"/debs/*.deb; do dpkg -x "$deb" "$tmp/pkg"; done
  nginx_bin=$tmp/pkg/usr/sbin/nginx
  nginx_etc=$tmp/pkg/etc/nginx
fi

# --- skeleton (merged /usr like Debian 12) ---------------------------------------------
mkdir -p "$root"/usr/{bin,sbin,lib,lib64} "$root"/etc/nginx/conf.d \
         "$root"/var/log/nginx "$root"/var/lib/nginx "$root"/var/cache/nginx \
         "$root"/run "$root"/tmp "$root"/root "$root"/dev "$root"/proc "$root"/sys \
         "$root"/usr/share/nginx/html
for d in bin sbin lib lib64; do ln -s "usr/$d" "$root/$d"; done
chmod 1777 "$root/tmp"
ln -s /run "$root/var/run"

# --- nginx and the libraries ldd lists (copied to the same paths, symlinks resolved) ---
cp "$nginx_bin" "$root/usr/sbin/nginx"
libs=$(ldd "$nginx_bin" | awk '$2 == "=>" && $3 ~ /^\//{print $3} $1 ~ /^\//{print $1}' | sort -u)
[ -n "$libs" ] || { echo "nginx image: ldd listed no libraries for $nginx_bin" >&2; exit 1; }
for lib in $libs; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done

# --- /etc/nginx ----------------------------------------------------------------------
for f in mime.types fastcgi_params fastcgi.conf scgi_params uwsgi_params proxy_params \
         koi-utf koi-win win-utf; do
  [ -f "$nginx_etc/$f" ] && cp "$nginx_etc/$f" "$root/etc/nginx/$f"
done
[ -f "$root/etc/nginx/mime.types" ] || { echo "nginx image: mime.types missing" >&2; exit 1; }

cat >"$root/etc/nginx/nginx.conf" <<'EOF'
# tlsbridge test image. Tests mount their own server snippets at /etc/nginx/conf.d.
user www-data;
worker_processes 1;
pid /run/nginx.pid;
error_log /var/log/nginx/error.log notice;

events {
    worker_connections 512;
}

http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log /var/log/nginx/access.log;
    sendfile on;
    keepalive_timeout 65;
    ssl_protocols TLSv1.2 TLSv1.3;

    include /etc/nginx/conf.d/*.conf;
}
EOF
cat >"$root/etc/nginx/conf.d/default.conf" <<'EOF'
server {
    listen 80 default_server;
    server_name _;
    root /usr/share/nginx/html;
}
EOF
echo 'tlsbridge test nginx' >"$root/usr/share/nginx/html/index.html"
ln -s /dev/stdout "$root/var/log/nginx/access.log"
ln -s /dev/stderr "$root/var/log/nginx/error.log"

# --- users, groups, name service -----------------------------------------------------
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
www-data:x:33:
nogroup:x:65534:
EOF
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"

# --- a shell for `docker exec` debugging ---------------------------------------------
if [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; then   # static busybox only
  cp /bin/busybox "$root/usr/bin/busybox"
  for applet in $("$root/usr/bin/busybox" --list); do
    [ -e "$root/usr/bin/$applet" ] || [ -e "$root/usr/sbin/$applet" ] \
      || ln -s busybox "$root/usr/bin/$applet"
  done
elif [ -x /bin/dash ]; then   # dash only needs libc, which is already there
  cp /bin/dash "$root/usr/bin/sh"
fi

# --- smoke check inside the rootfs, then import --------------------------------------
if command -v chroot >/dev/null; then
  chroot "$root" /usr/sbin/nginx -V >/dev/null 2>&1 \
    || { echo "nginx image: nginx does not run inside the rootfs" >&2; chroot "$root" /usr/sbin/nginx -V; exit 1; }
fi

# `docker import --change` (Docker 20.10) rejects STOPSIGNAL, so the rootfs tar goes into a
# FROM-scratch build instead: still no registry involved. The legacy builder is forced because
# a newer CLI's BuildKit path needs the buildx plugin, which Debian's docker.io lacks.
ctx=$tmp/context
mkdir -p "$ctx"
tar -C "$root" --numeric-owner --owner=0 --group=0 -cf "$ctx/rootfs.tar" .
cat >"$ctx/Dockerfile" <<'EOF'
FROM scratch
ADD rootfs.tar /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL org.tlsbridge.test=nginx
EXPOSE 80 443
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
EOF
DOCKER_BUILDKIT=0 docker build --force-rm -q -t "$image" "$ctx" >"$tmp/build.log" 2>&1 \
  || { cat "$tmp/build.log" >&2; exit 1; }

new_id=$(docker image inspect -f '{{.Id}}' "$image")
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
  docker rmi "$old_id" >/dev/null 2>&1 || true   # still used by a container: leave it
fi
size=$(docker image inspect -f '{{.Size}}' "$image")
end=$(date +%s.%N)
awk -v i="$image" -v s="$size" -v a="$start" -v b="$end" \
  'BEGIN{printf "nginx image: built %s (%.1f MB) in %.1f s\n", i, s/1e6, b-a}'
