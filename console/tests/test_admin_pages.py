"""Every admin page of the platform's own models renders with a row in it, for a superuser and for a
view-only operator, together with the rows of its inlines.

The list pages are checked elsewhere with garbage parameters; this is about pages with data: a
read-only inline or a view-only page renders its fields another way than an editable one (a crossing
inline once answered 500 as soon as a threshold had been crossed). Rows come from each app's factories
(`<app>/tests/factories.py`), so a new model registered in admin needs a factory, and this test says so.
"""

import importlib

import factory
import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.urls import reverse

pytestmark = pytest.mark.django_db

PROJECT_APPS = [
    "tenants",
    "metering",
    "apigateway",
    "stripe_sync",
    "costwatch",
    "outbound",
    "console",
    "core",
]


def _factories() -> dict:
    """{model: factory}, the model's own app's factory first."""
    found: dict = {}
    for app in PROJECT_APPS:
        try:
            module = importlib.import_module(f"{app}.tests.factories")
        except ModuleNotFoundError:
            continue
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, factory.django.DjangoModelFactory):
                model = value._meta.model
                if model is not None and (model not in found or model._meta.app_label == app):
                    found[model] = value
    return found


FACTORIES = _factories()
REGISTERED = sorted(
    (model for model in admin.site._registry if model._meta.app_label in PROJECT_APPS),
    key=lambda model: model._meta.label,
)


def _factory_for(model):
    concrete = model._meta.concrete_model
    made = FACTORIES.get(model) or FACTORIES.get(concrete)
    assert made is not None, (
        f"{model._meta.label} is in admin but has no factory in its app's tests/factories.py"
    )
    return made


def _row_with_inlines(model, model_admin, request):
    row = _factory_for(model)()
    if model._meta.proxy:
        row = model.objects.get(pk=row.pk)
    for inline in model_admin.get_inline_instances(request, row):
        fk = next(
            field
            for field in inline.model._meta.get_fields()
            if field.many_to_one and field.related_model in (model, model._meta.concrete_model)
        )
        _factory_for(inline.model)(**{fk.name: row._meta.concrete_model.objects.get(pk=row.pk)})
    return row


@pytest.fixture
def viewer(django_user_model):
    """A staff user holding every view permission and nothing else."""
    user = django_user_model.objects.create_user(username="viewer", password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    return user


def test_every_model_of_ours_in_admin_is_checked():
    assert len(REGISTERED) >= 25
    assert {model._meta.app_label for model in REGISTERED} >= {"tenants", "metering", "outbound"}


@pytest.mark.parametrize("model", REGISTERED, ids=lambda model: model._meta.label)
def test_every_admin_page_of_ours_renders_a_row_for_a_superuser_and_a_viewer(
    model, admin_client, admin_user, client, viewer, rf
):
    request = rf.get("/")
    request.user = admin_user
    model_admin = admin.site._registry[model]
    row = _row_with_inlines(model, model_admin, request)
    info = (model._meta.app_label, model._meta.model_name)
    pages = [reverse("admin:{}_{}_changelist".format(*info))]
    if model_admin.has_view_permission(request, row):
        pages.append(reverse("admin:{}_{}_change".format(*info), args=[row.pk]))
    client.force_login(viewer)
    for who, http in (("superuser", admin_client), ("viewer", client)):
        for url in pages:
            response = http.get(url)
            assert response.status_code == 200, f"{who} {url}: {response.status_code}"
            assert str(row.pk) in response.content.decode() or url == pages[0], f"{who} {url}"
