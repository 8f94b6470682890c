# nfs-testgen image: the test file generator, built like the uploader; its health check is built
# into the binary (`nfs-testgen --healthcheck`), so the runtime image needs no curl.
# Build from the repository root: docker build -f docker/testgen.Dockerfile -t nfs-testgen .

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
 && cmake --build build -j "$(nproc)" --target nfs-testgen \
 && strip build/bin/nfs-testgen

FROM debian:12-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libcurl4 libssl3 libcpp-httplib0.11 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /nonexistent --shell /usr/sbin/nologin app \
 && mkdir -p /mnt/nfs/incoming \
 && chown -R app:app /mnt/nfs
COPY --from=build /src/build/bin/nfs-testgen /usr/local/bin/nfs-testgen

# Same uid/gid as the uploader image, so both can share the files on the NFS volume.
USER 10001:10001
ENV GEN_OUTPUT_DIR=/mnt/nfs/incoming \
    GEN_HTTP_HOST=0.0.0.0 \
    GEN_HTTP_PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/nfs-testgen", "--healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/nfs-testgen"]
