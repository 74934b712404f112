# syntax=docker/dockerfile:1
# The fhir-gateway image: `docker build -t fhir-gateway:0.1.0 .`
# Two stages: the builder makes the wheel and a virtual environment; the final stage gets only that environment,
# runs as uid 10001, and writes nowhere but /tmp, so it runs with a read-only root filesystem (the Helm chart mounts
# an emptyDir at /tmp).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY mappers ./mappers
COPY connectors ./connectors
COPY conformance ./conformance
# Build our wheel, then install it and its dependencies from wheels only (no compiler is needed, or present) into a
# virtual environment without pip. pip compiles the .pyc files here, since the final image cannot write them.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv --without-pip /opt/venv \
 && python -m pip --python /opt/venv/bin/python install --only-binary=:all: /wheels/*.whl

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# No installer in the final image: the base image's pip, setuptools and wheel go; then the unprivileged user.
RUN python -m pip uninstall --yes pip setuptools wheel \
 && groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin gateway
COPY --from=builder /opt/venv /opt/venv
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["fhir-gateway"]
CMD ["api"]
