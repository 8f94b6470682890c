# nfs-blob-uploader image: built on Debian 12 with the distribution's -dev packages, run on
# debian:12-slim with only the runtime libraries, as an unprivileged user.
# Build from the repository root: docker build -f docker/uploader.Dockerfile -t nfs-blob-uploader .

FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config ca-certificates \
      libcurl4-openssl-dev libssl-dev nlohmann-json3-dev libcpp-httplib-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake/ cmake/
COPY src/ src/
COPY tools/ tools/
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DNBU_BUILD_TESTS=OFF \
 && cmake --build build -j "$(nproc)" --target nfs-blob-uploader \
 && strip build/bin/nfs-blob-uploader

FROM debian:12-slim
# curl is only for the HEALTHCHECK below; libcurl4 and libssl3 are what the binary links.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libcurl4 libssl3 libcpp-httplib0.11 ca-certificates curl media-types \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /nonexistent --shell /usr/sbin/nologin app \
 && mkdir -p /mnt/nfs/incoming /mnt/nfs/.processing /mnt/nfs/.failed /mnt/staging \
 && chown -R app:app /mnt/nfs /mnt/staging
COPY --from=build /src/build/bin/nfs-blob-uploader /usr/local/bin/nfs-blob-uploader

USER 10001:10001
WORKDIR /home/app
ENV APP_HTTP_HOST=0.0.0.0 \
    APP_HTTP_PORT=8000
EXPOSE 8000
VOLUME ["/mnt/staging"]
# Start-up may take as long as the Kubernetes startupProbe allows (k8s/deployment.yaml: 36 x
# 5 s): the checks and a managed-identity token fetch come before the API listens. The
# replica-id wait comes after, while /healthz already answers.
# Failures in the start period do not count; the first success ends it.
HEALTHCHECK --interval=15s --timeout=3s --start-period=180s --retries=3 \
  CMD curl -fsS --noproxy '*' "http://127.0.0.1:${APP_HTTP_PORT}/healthz" > /dev/null || exit 1
# Exec form: the binary is PID 1 and receives SIGTERM itself for its graceful shutdown
# (APP_SHUTDOWN_GRACE_S); give `docker stop -t` / the pod's grace period more than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/nfs-blob-uploader"]
