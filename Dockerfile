# syntax=docker/dockerfile:1
# The operator image: a virtualenv built in one stage, copied into a slim,
# non-root runtime stage. Base image pinned by version; BASE may name another
# Debian image with Python 3.11 as `python` and its venv module (the real-node
# dev cluster builds on one made with debootstrap: no registry is reachable there).
ARG BASE=python:3.11.11-slim-bookworm
FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m venv /venv && /venv/bin/pip install --no-cache-dir .

FROM ${BASE}
COPY --from=build /venv /venv
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["patchwarden"]
CMD ["run"]
