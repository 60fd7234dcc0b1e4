FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY core core
COPY devices devices
COPY alerts alerts
COPY ingest ingest
COPY api api
COPY simulators simulators
COPY pilots pilots
COPY telecare telecare
COPY migrations migrations
RUN pip install --no-cache-dir -e . && useradd --system telecare
USER telecare
ENTRYPOINT ["telecare", "--json-logs"]
