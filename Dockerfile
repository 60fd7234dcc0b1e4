# The production image: Telecare's base package only (no dev tools, no demo-only packages),
# installed as a regular (not editable) package into a virtual environment, run as a non-root
# user. tests/deploy/test_compose.py checks these promises; docs/deployment.md says more.

# Build stage: pip builds and installs the package; the sources stay behind.
FROM python:3.11.15-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY core core
COPY devices devices
COPY alerts alerts
COPY anomaly anomaly
COPY ingest ingest
COPY api api
COPY simulators simulators
COPY pilots pilots
COPY evaluation evaluation
COPY telecare telecare
COPY migrations migrations
RUN python -m venv /opt/telecare && /opt/telecare/bin/pip install .
# The SQL ships as package data; refuse to build an image whose `telecare migrate` finds none.
RUN /opt/telecare/bin/python -c "from core.migrations import load_migrations as m; \
assert m(), 'no migrations in the installed package'" \
    && /opt/telecare/bin/pip uninstall --yes pip

# Runtime stage: the same Python, the virtual environment, nothing else.
FROM python:3.11.15-slim-bookworm
ENV PATH=/opt/telecare/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /opt/telecare /opt/telecare
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin telecare
# Numeric, so that an orchestrator can verify the image does not run as root.
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["telecare", "--json-logs"]
