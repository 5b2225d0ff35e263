# kvfabric: one image for every actor. `docker run kvfabric <subcommand> --config <file>`, e.g.
#   docker run kvfabric coordinator --config /etc/kvfabric/coordinator.yaml
#   docker run kvfabric shard-node  --config /etc/kvfabric/shard-node.yaml
#   docker run kvfabric doctor      --config /etc/kvfabric/worker.yaml
# docker-compose.yml runs the whole cluster; docs/operations.md "Docker compose".
#
# Build: docker build -t kvfabric:dev .              (host-memory arenas; CUDA arenas need nvcc:)
#        docker build -t kvfabric:cuda --build-arg KVF_CUDA=ON .
# The CUDA build links cudart statically: the runtime image needs only the driver's libcuda.so.1,
# which the NVIDIA container toolkit mounts into GPU containers. Debian's UCX has no CUDA
# transports, so GPU blocks are staged through host memory; GPUDirect RDMA needs a CUDA-enabled
# UCX (e.g. a base image with NVIDIA's HPC-X), see docs/operations.md.

ARG NODE_VERSION=20

# ---- build: the native addon (cmake-js, UCX headers) and the TypeScript -------------------------
FROM node:${NODE_VERSION}-bookworm AS build
ARG KVF_CUDA=OFF
ARG CUDA_APT_VERSION=12-6
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake g++ make pkg-config python3 libucx-dev \
 && if [ "$KVF_CUDA" = "ON" ]; then \
      curl -fsSL -o /tmp/cuda-keyring.deb \
        https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb \
      && dpkg -i /tmp/cuda-keyring.deb && apt-get update \
      && apt-get install -y --no-install-recommends cuda-nvcc-${CUDA_APT_VERSION} cuda-cudart-dev-${CUDA_APT_VERSION}; \
    fi \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first: this layer is reused until package*.json change.
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY native ./native
RUN npm run build:native -- --CDKVF_CUDA=${KVF_CUDA}
COPY tsconfig.json tsconfig.build.json ./
COPY shared ./shared
COPY services ./services
COPY bin ./bin
RUN npm run build:ts \
 && npm prune --omit=dev --no-audit --no-fund

# ---- runtime: Node, libucx0 and the built files; no compiler, no sources ------------------------
FROM node:${NODE_VERSION}-bookworm-slim AS runtime
# ucx-utils gives `kvfabric doctor` ucx_info (transport list) and ucx_perftest.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libucx0 ucx-utils ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 kvfabric \
 && useradd --system --uid 10001 --gid kvfabric --home-dir /opt/kvfabric --shell /usr/sbin/nologin kvfabric
WORKDIR /opt/kvfabric
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --from=build /src/bin ./bin
COPY --from=build /src/native/build/Release/kvfabric_native.node ./native/build/Release/kvfabric_native.node
COPY cluster-config ./cluster-config

# UCX's mmap hooks crash V8 (bin/kvfabric.js sets this too; the env makes it visible to doctor).
ENV UCX_MEM_MMAP_HOOK_MODE=none \
    NODE_ENV=production \
    KVFABRIC_METRICS_HOST=0.0.0.0 \
    KVFABRIC_METRICS_PORT=9400
EXPOSE 9400

USER kvfabric:kvfabric
# /healthz of the actor's metrics port (docs/operations.md "Metrics"): process up, event loop alive.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.KVFABRIC_METRICS_PORT || 9400) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "bin/kvfabric.js"]
CMD ["--help"]
