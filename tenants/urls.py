from django.urls import path

from tenants import api

urlpatterns = [
    path("tenant", api.tenant_me, name="tenant-me"),
    path("tenants", api.tenants, name="tenants"),
    path("tenants/<str:ref>", api.tenant_detail, name="tenant-detail"),
    path("tenants/<str:ref>/suspend", api.tenant_suspend_view, name="tenant-suspend"),
    path("tenants/<str:ref>/reactivate", api.tenant_reactivate_view, name="tenant-reactivate"),
    path("tenants/<str:ref>/keys", api.tenant_keys, name="tenant-keys"),
    path("tenants/<str:ref>/keys/<str:prefix>", api.tenant_key_revoke, name="tenant-key-revoke"),
]
