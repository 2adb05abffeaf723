FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 SONOLABEL_DATA_DIR=/data SONOLABEL_INSTANCE_DIR=/data/instance
WORKDIR /app
COPY pyproject.toml README.md ./
COPY annotator annotator
COPY detector detector
COPY migrations migrations
RUN pip install -e . && mkdir -p /data/instance
EXPOSE 5000
CMD ["gunicorn", "--workers", "4", "--threads", "4", "--bind", "0.0.0.0:5000", "annotator:create_app()"]
