FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY requirements/ requirements/
RUN pip install --no-cache-dir -r requirements/prod.txt
COPY . .
RUN useradd --system --uid 1000 billing \
    && DJANGO_SECRET_KEY=collectstatic-only DJANGO_DEBUG=0 python manage.py collectstatic --no-input -v 0
USER billing
EXPOSE 8000
CMD ["gunicorn", "billing_platform.wsgi:application", "--bind", "0.0.0.0:8000"]
