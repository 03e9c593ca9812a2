# The reference limit service (`limit-harness serve`), one image for both of its processes: the
# API (`serve --role api`) and the projector (`serve --role projector`). compose.yaml runs them
# with PostgreSQL and Redis; docs/deployments.md and the README say how the harness drives it.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# The package and what it ships (fixtures, the load test, the docs): .dockerignore keeps the
# rest of the checkout (virtual environments, reports, tests) out of the image.
COPY pyproject.toml README.md ./
COPY harness ./harness
COPY fixtures ./fixtures
COPY loadtests ./loadtests
COPY docs ./docs
RUN pip install '.[deployment]' \
    && useradd --system --uid 10001 --home-dir /var/lib/limit --create-home limit

USER limit
WORKDIR /var/lib/limit
EXPOSE 8080
ENTRYPOINT ["limit-harness"]
# Alone, without compose: one process, a SQLite ledger in the container.
CMD ["serve", "--host", "0.0.0.0", "--port", "8080", "--ledger", "sqlite:///limit-ledger.sqlite"]
