# syntax=docker/dockerfile:1
# The operator image: a virtualenv built in one stage, copied into a slim,
# non-root runtime stage. Base image pinned by version.
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m venv /venv && /venv/bin/pip install --no-cache-dir .

FROM python:3.11.11-slim-bookworm
COPY --from=build /venv /venv
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["patchwarden"]
CMD ["run"]
