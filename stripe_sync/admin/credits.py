"""Credit grants in admin: "Grant credit" (the add form), "Void at Stripe" and "Send again to Stripe".

A grant is an audit record: nothing of it is edited or deleted after it is made. The row is written
in the add form's transaction and sent to Stripe after commit (stripe_sync.credits), so a grant
Stripe made always has its row.
"""

from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.template.response import TemplateResponse
from django.utils import timezone

from core.money import minor_places, round_minor, to_minor
from stripe_sync.admin.reporting import confirm
from stripe_sync.credits import (
    CREDIT_GRANT_EXPIRY_PAST,
    CREDIT_GRANT_NOT_ONBOARDED,
    CreditGrantError,
    credit_grant_record,
    credit_grant_send,
    credit_grant_void,
)
from stripe_sync.models import CreditGrant

VOID_PERMISSION = "stripe_sync.void_creditgrant"
GRANT_PERMISSION = "stripe_sync.add_creditgrant"
# Stripe's amounts are 64-bit integers of minor units; a grant this large is a typing mistake.
MAX_AMOUNT = Decimal("100000000")


class CreditGrantForm(forms.ModelForm):
    amount = forms.DecimalField(
        min_value=Decimal("0.01"),
        max_value=MAX_AMOUNT,
        max_digits=12,
        help_text="In the currency's major unit (12.50 is 12 dollars 50 cents); no more decimal places "
        "than the currency has.",
    )

    class Meta:
        model = CreditGrant
        fields = ["tenant", "amount", "currency", "category", "expires_at", "reason"]
        help_texts = {
            "currency": "Three letters, e.g. usd: the currency of the tenant's metered prices.",
            "expires_at": "UTC; leave empty for credit that never expires.",
            "reason": "Why the credit is granted (kept with the grant, shown to operators).",
        }

    def clean_currency(self):
        currency = self.cleaned_data["currency"].strip().lower()
        if len(currency) != 3 or not currency.isascii() or not currency.isalpha():
            raise forms.ValidationError("Three letters: an ISO currency code such as usd.")
        return currency

    def clean_tenant(self):
        tenant = self.cleaned_data["tenant"]
        if not tenant.stripe_customer_id:
            raise forms.ValidationError(CREDIT_GRANT_NOT_ONBOARDED.format(slug=tenant.slug))
        return tenant

    def clean_expires_at(self):
        expires_at = self.cleaned_data.get("expires_at")
        if expires_at is not None and expires_at <= timezone.now():
            raise forms.ValidationError(CREDIT_GRANT_EXPIRY_PAST)
        return expires_at

    def clean_reason(self):
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("Say why the credit is granted.")
        return reason

    def clean(self):
        cleaned = super().clean()
        amount, currency = cleaned.get("amount"), cleaned.get("currency")
        if amount is not None and currency:
            # Exactly, never rounded: 12.345 USD is refused rather than granted as 12.35.
            if round_minor(amount, currency) != amount:
                places = minor_places(currency)
                self.add_error(
                    "amount",
                    f"{currency.upper()} has {places} decimal place{'s' if places != 1 else ''}: "
                    f"{amount} cannot be granted exactly",
                )
            else:
                cleaned["amount_minor"] = to_minor(amount, currency)
        return cleaned


@admin.register(CreditGrant)
class CreditGrantAdmin(admin.ModelAdmin):
    form = CreditGrantForm
    list_display = [
        "id",
        "tenant",
        "amount_display",
        "category",
        "shown_status",
        "expires_at",
        "granted_by_name",
        "reason",
        "created_at",
        "stripe_id",
    ]
    list_filter = ["status", "category", "currency"]
    search_fields = ["tenant__slug", "tenant__name", "=stripe_id", "reason"]
    list_select_related = ["tenant"]
    date_hierarchy = "created_at"
    actions = ["void_at_stripe", "send_again"]
    add_fields = ["tenant", "amount", "currency", "category", "expires_at", "reason"]
    shown_fields = [
        "tenant",
        "amount_display",
        "category",
        "shown_status",
        "expires_at",
        "reason",
        "granted_by_name",
        "created_at",
        "stripe_id",
        "customer_id",
        "attempts",
        "sent_at",
        "last_error",
        "voided_at",
        "voided_by_name",
        "void_reason",
    ]

    @admin.display(description="amount", ordering="amount_minor")
    def amount_display(self, obj):
        return obj.amount_display

    @admin.display(description="status", ordering="status")
    def shown_status(self, obj):
        return obj.status_at(timezone.now())

    def get_fields(self, request, obj=None):
        return self.add_fields if obj is None else self.shown_fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.shown_fields

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is not None:
            kwargs["fields"] = []
        return super().get_form(request, obj, change, **kwargs)

    # An audit record: made once through the add form, never edited or deleted.
    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_void_permission(self, request, obj=None):
        return request.user.has_perm(VOID_PERMISSION)

    def has_send_permission(self, request, obj=None):
        return request.user.has_perm(GRANT_PERMISSION)

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        grant = credit_grant_record(
            tenant=data["tenant"],
            amount_minor=data["amount_minor"],
            currency=data["currency"],
            category=data["category"],
            reason=data["reason"],
            expires_at=data.get("expires_at"),
            actor=request.user,
        )
        # The admin goes on with `obj` (its log entry, the redirect): it becomes the recorded row.
        for field in CreditGrant._meta.concrete_fields:
            setattr(obj, field.attname, getattr(grant, field.attname))
        obj._state.adding, obj._state.db = False, grant._state.db
        transaction.on_commit(lambda: self._send(request, grant))

    def _send(self, request, grant: CreditGrant) -> None:
        try:
            grant = credit_grant_send(grant=grant)
        except CreditGrantError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        if grant.status == CreditGrant.Status.ACTIVE:
            self.log_change(request, grant, f"Granted at Stripe: {grant.stripe_id}")
            self.message_user(
                request,
                f"{grant.amount_display} granted to {grant.tenant} at Stripe ({grant.stripe_id}).",
                messages.SUCCESS,
            )
        elif grant.status == CreditGrant.Status.PENDING:
            self.message_user(
                request,
                f"Grant {grant.pk} is recorded but Stripe's answer is not known ({grant.last_error}); "
                "'Send again to Stripe' completes it without granting twice.",
                messages.WARNING,
            )
        else:
            self.message_user(request, f"Stripe refused grant {grant.pk}: {grant.last_error}", messages.ERROR)

    @admin.action(description="Void at Stripe (unused credit can no longer be applied)", permissions=["void"])
    def void_at_stripe(self, request, queryset):
        reason = (request.POST.get("void_reason") or "").strip()
        if request.POST.get("confirmed") != "yes" or not reason:
            if request.POST.get("confirmed") == "yes":
                self.message_user(request, "Say why the grants are voided.", messages.ERROR)
            return TemplateResponse(
                request,
                "admin/stripe_sync/creditgrant/void.html",
                {
                    **self.admin_site.each_context(request),
                    "opts": self.model._meta,
                    "title": "Void credit grants at Stripe",
                    "queryset": queryset,
                    "action": "void_at_stripe",
                    "confirm_label": "Void at Stripe",
                },
            )
        for grant in queryset:
            try:
                grant = credit_grant_void(grant=grant, reason=reason, actor=request.user)
            except CreditGrantError as exc:
                self.message_user(request, f"Grant {grant.pk}: {exc}", messages.ERROR)
                continue
            self.log_change(request, grant, f"Voided at Stripe: {reason}")
            self.message_user(request, f"Grant {grant.pk} ({grant.stripe_id}) voided.", messages.SUCCESS)
        return None

    @admin.action(
        description="Send again to Stripe (pending or failed grants; never grants twice)",
        permissions=["send"],
    )
    def send_again(self, request, queryset):
        page = confirm(
            self,
            request,
            queryset,
            action="send_again",
            title="Send credit grants again to Stripe",
            explanation="Each grant is looked for at Stripe first and made only if it is not there.",
            label="Send to Stripe",
        )
        if page is not None:
            return page
        for grant in queryset:
            self._send(request, grant)
        return None
