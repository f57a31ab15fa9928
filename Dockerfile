# kdeserve CPU image on Debian 12: `docker build -t kdeserve:0.1.0 .` (deploy/README.md).
# Stage `build` runs the same dependency installer and build command as CI (scripts/install_deps.sh,
# scripts/build.sh; tests/deploy checks it), with LibTorch from the PyPI torch wheel in the venv
# at $KDESERVE_VENV (`--torch cpu`: torch and the two CUDA runtime wheels its CPU library links).
# The runtime stage holds only the server, the CLI, the Debian packages of the libraries they
# link, the wheel libraries they load (in the wheel's layout, found through the server's RUNPATH;
# no CUDA driver is needed), the default config and the class index, and runs as a non-root user.
# Weights are mounted at /models (see deploy/README.md).
FROM debian:12-slim AS build
ENV KDESERVE_VENV=/opt/kdeserve/venv \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY scripts/install_deps.sh scripts/install_deps.sh
COPY requirements/ requirements/
RUN bash scripts/install_deps.sh --build --torch cpu && rm -rf /var/lib/apt/lists/*
COPY . .
ENV KDESERVE_CMAKE_ARGS="-DKDESERVE_BUILD_TESTS=OFF -DKDESERVE_BUILD_BENCHMARKS=OFF"
RUN bash scripts/build.sh kdeserve-server kdeserve-cli \
 && bash scripts/runtime_packages.sh --vendored "$KDESERVE_VENV" \
      build/server/kdeserve-server build/client/kdeserve-cli > build/runtime-packages.txt \
 && strip build/server/kdeserve-server build/client/kdeserve-cli \
 && patchelf --set-rpath /opt/kdeserve/site-packages/torch/lib build/server/kdeserve-server

FROM debian:12-slim
LABEL org.opencontainers.image.title="kdeserve" \
      org.opencontainers.image.description="T2T-ViT and BigGAN-deep over gRPC, exact or KDEformer attention (CPU)" \
      org.opencontainers.image.version="0.1.0"
COPY --from=build /src/scripts/install_deps.sh /src/build/runtime-packages.txt /tmp/kdeserve/
RUN bash /tmp/kdeserve/install_deps.sh --runtime /tmp/kdeserve/runtime-packages.txt \
 && rm -rf /var/lib/apt/lists/* /tmp/kdeserve \
 && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin kdeserve \
 && mkdir -p /models
# LibTorch as the server loads it: libtorch_cpu and libc10, the wheel's libgomp (the OpenMP
# runtime the process uses), and the CUDA runtime and CUPTI that libtorch_cpu links for its
# profiler. libtorch_cpu finds them through its RUNPATH $ORIGIN:$ORIGIN/../../nvidia/cu13/lib.
COPY --from=build /opt/kdeserve/venv/lib/python3.11/site-packages/torch/lib/libtorch_cpu.so \
                  /opt/kdeserve/venv/lib/python3.11/site-packages/torch/lib/libc10.so \
                  /opt/kdeserve/venv/lib/python3.11/site-packages/torch/lib/libgomp.so.1 \
                  /opt/kdeserve/site-packages/torch/lib/
COPY --from=build /opt/kdeserve/venv/lib/python3.11/site-packages/nvidia/cu13/lib/libcudart.so.13 \
                  /opt/kdeserve/venv/lib/python3.11/site-packages/nvidia/cu13/lib/libcupti.so.13 \
                  /opt/kdeserve/site-packages/nvidia/cu13/lib/
COPY --from=build /src/build/server/kdeserve-server /src/build/client/kdeserve-cli /usr/local/bin/
COPY deploy/config/server.yaml /etc/kdeserve/server.yaml
COPY models/preprocess/imagenet_class_index.tsv /usr/share/kdeserve/imagenet_class_index.tsv
USER 10001:10001
# 8500 gRPC (inference, grpc.health.v1, reflection), 8502 Prometheus /metrics
EXPOSE 8500 8502
VOLUME ["/models"]
# Readiness (models loaded and warmed up). The start period allows for loading real weights, as in
# deploy/docker-compose.yml.
HEALTHCHECK --interval=15s --timeout=5s --retries=4 --start-period=300s \
  CMD ["kdeserve-cli", "--address", "127.0.0.1:8500", "--deadline", "4", "health", "--service", "readiness"]
ENTRYPOINT ["kdeserve-server"]
CMD ["--config", "/etc/kdeserve/server.yaml"]
