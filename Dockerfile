# Image of every meetingtasks service in compose.yaml (workers, scheduler, AI node,
# gateway, Flower); the command picks the role. The AI node's image is built with
# EXTRAS="[model]": llama.cpp compiled for any x86-64 with AVX2 (a native build for a CPU
# with AVX-512 and AMX crashed at the first token), and the SmolLM2 model file.
FROM python:3.11-slim
ARG EXTRAS=""
WORKDIR /app
RUN if [ -n "$EXTRAS" ]; then \
        apt-get update && apt-get install -y --no-install-recommends build-essential cmake \
        && rm -rf /var/lib/apt/lists/*; \
    fi
COPY pyproject.toml README.md ./
COPY meetingtasks ./meetingtasks
COPY routes ./routes
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF"
RUN pip install --no-cache-dir -e ".${EXTRAS}" && useradd --create-home meetingtasks
USER meetingtasks
ENV MEETINGTASKS_ROUTES_DIR=/app/routes
