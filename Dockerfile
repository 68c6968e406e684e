# Image of every meetingtasks service in compose.yaml (workers, scheduler, AI node,
# gateway, Flower); the command picks the role.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md celeryconfig.py ./
COPY meetingtasks ./meetingtasks
COPY routes ./routes
RUN pip install --no-cache-dir -e . && useradd --create-home meetingtasks
USER meetingtasks
ENV MEETINGTASKS_ROUTES_DIR=/app/routes
