"""Reads for tenants."""

from bisect import bisect_left, bisect_right

from django.db.models import Q

from core.json_input import text_problem
from core.parsing import ParseError, parse_int
from tenants.models import Tenant, TenantChange


def tenant_get_by_ref(*, ref: str) -> Tenant:
    """Find a tenant by slug, external id or numeric id, as operators type them on the command line."""
    tenant = Tenant.objects.filter(slug=ref).first() or Tenant.objects.filter(external_id=ref).first()
    if tenant is None and ref.isascii() and ref.isdigit():  # "²" is a digit int() refuses
        try:
            tenant = Tenant.objects.filter(pk=parse_int(ref, minimum=1, maximum=2**63 - 1)).first()
        except ParseError:
            tenant = None
    if tenant is None:
        shown = ref if len(ref) <= 64 else f"{ref[:61]}..."
        raise Tenant.DoesNotExist(f"no tenant with slug, external id or id {shown!r}")
    return tenant


def tenant_by_api_ref(*, ref: str) -> Tenant:
    """The tenant a platform key names: by external id first, then by slug (never by numeric id:
    an API client knows its own ids, not ours). Tenant.DoesNotExist names the ref."""
    tenant = tenants_by_api_refs(refs=[ref]).get(ref)
    if tenant is None:
        shown = ref if len(ref) <= 64 else f"{ref[:61]}..."
        raise Tenant.DoesNotExist(f"no tenant with external id or slug {shown!r}")
    return tenant


def tenants_by_api_refs(*, refs) -> dict[str, Tenant]:
    """{ref: tenant} for the refs that name one (one query), by external id first, then slug.
    tenants.services keeps an external id from equalling another tenant's slug."""
    refs = {ref for ref in refs if isinstance(ref, str) and 0 < len(ref) <= 255 and text_problem(ref) is None}
    if not refs:
        return {}
    found: dict[str, Tenant] = {}
    for tenant in Tenant.objects.filter(Q(external_id__in=refs) | Q(slug__in=refs)):
        if tenant.slug in refs:
            found.setdefault(tenant.slug, tenant)
        if tenant.external_id in refs:
            found[tenant.external_id] = tenant  # the external id wins
    return found


class PlanHistory:
    """Which plan each tenant was on at any moment, from its TenantChange history (one query).

    Before a tenant's first recorded plan change it was on that change's old plan (or the plan of
    its "created" row); a tenant with no history has always been on its current plan.
    Usage reporting decides billed or covered per hour with it (`metered_during`), not with the plan
    of the moment it runs.
    """

    def __init__(self, tenants):
        self._current = {t.pk: t.plan for t in tenants}
        self._timelines: dict[int, tuple[list, list[str]]] = {}
        changes = (
            TenantChange.objects.filter(
                tenant_id__in=list(self._current),
                field__in=[TenantChange.Field.PLAN, TenantChange.Field.CREATED],
            )
            .order_by("tenant_id", "created_at", "id")
            .values_list("tenant_id", "field", "old_value", "new_value", "created_at")
        )
        raw: dict[int, list] = {}
        for tenant_id, field, old, new, at in changes:
            raw.setdefault(tenant_id, []).append((field, old, new, at))
        for tenant_id, rows in raw.items():
            moments, plans = [], []
            initial = None
            for field, old, new, at in rows:
                plan = new.split("/", 1)[0] if field == TenantChange.Field.CREATED else new
                if initial is None:
                    initial = old if field == TenantChange.Field.PLAN and old else plan
                moments.append(at)
                plans.append(plan)
            if plans[-1] != self._current[tenant_id]:
                # A change written without a history row (a script, a fixture): it counts from the
                # last recorded change, the earliest it can have happened.
                plans[-1] = self._current[tenant_id]
            self._timelines[tenant_id] = (moments, [initial, *plans])

    def plan_at(self, tenant_id: int, moment) -> str:
        """The plan in force at `moment`."""
        timeline = self._timelines.get(tenant_id)
        if timeline is None:
            return self._current[tenant_id]
        moments, plans = timeline
        return plans[bisect_right(moments, moment)]

    def metered_during(self, tenant_id: int, start, end) -> bool:
        """Whether the tenant was on the metered plan at any moment of [start, end)."""
        timeline = self._timelines.get(tenant_id)
        if timeline is None:
            return self._current[tenant_id] == Tenant.Plan.METERED
        moments, plans = timeline
        first = bisect_right(moments, start)  # plans[first] is in force at `start`
        last = bisect_left(moments, end)  # plans[last] is in force just before `end`
        return any(plan == Tenant.Plan.METERED for plan in plans[first : last + 1])
