# The wangge app image for docker-compose.yml (production users: the database is the postgis/postgis service).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gis ./gis
COPY api ./api
COPY data ./data
RUN pip install --no-cache-dir . && useradd --system wangge
USER wangge
EXPOSE 8000
CMD ["wangge", "serve", "--host", "0.0.0.0", "--port", "8000"]
