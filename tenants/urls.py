from django.urls import path

from tenants import api

urlpatterns = [
    path("tenant", api.tenant_me, name="tenant-me"),
]
