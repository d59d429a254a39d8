from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.core.validators import validate_email

from core.commands import BaseCommand, decimal_argument, validation_error_message
from costwatch.budgets import DEFAULT_THRESHOLDS, budget_create
from costwatch.models import Basis, Budget
from tenants.models import Tenant
from tenants.selectors import tenant_get_by_ref


def _amount_argument(field: str, **bounds):
    column = Budget._meta.get_field(field)
    return decimal_argument(max_digits=column.max_digits, max_places=column.decimal_places, **bounds)


class Command(BaseCommand):
    help = "Create a monthly AWS cost budget (whole account, one service, or one tenant tag value)."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument(
            "--amount",
            required=True,
            type=_amount_argument("amount", minimum=Decimal("0.01")),
            help="monthly amount, e.g. 1500 or 99.50",
        )
        parser.add_argument("--currency", help="default COSTWATCH_CURRENCY")
        parser.add_argument(
            "--thresholds",
            default=DEFAULT_THRESHOLDS,
            help="percentages, each optionally :actual, :forecast or :both (default 50,80,100)",
        )
        parser.add_argument(
            "--basis", choices=Basis.values, default=Basis.BOTH, help="what thresholds without a suffix judge"
        )
        scope = parser.add_mutually_exclusive_group()
        scope.add_argument("--service", default="", help='one AWS service, e.g. "Amazon S3"')
        scope.add_argument("--tag-value", default="", help="one value of the tenant tag")
        parser.add_argument("--tenant", help="the tenant (slug or id) the tag value belongs to")
        parser.add_argument("--sns-topic", default="", help="SNS topic ARN (default COSTWATCH_SNS_TOPIC_ARN)")
        parser.add_argument(
            "--emails", default="", help="comma-separated addresses (default OPERATOR_EMAILS)"
        )
        parser.add_argument(
            "--pass-through", action="store_true", help="bill the tenant the month's spend over the amount"
        )
        parser.add_argument(
            "--markup",
            type=_amount_argument("markup_percent", minimum=0, maximum=1000),
            default=Decimal(0),
            help="with --pass-through: markup in percent",
        )

    def handle(self, *args, **options):
        try:
            tenant = tenant_get_by_ref(ref=options["tenant"]) if options["tenant"] else None
        except Tenant.DoesNotExist as exc:
            raise CommandError(str(exc)) from None
        if options["service"] and tenant:
            raise CommandError("--tenant goes with a tag-value budget, not with --service")
        emails = [email.strip() for email in options["emails"].split(",") if email.strip()]
        try:
            for email in emails:
                validate_email(email)
            budget = budget_create(
                name=options["name"],
                amount=options["amount"],
                currency=options["currency"] or settings.COSTWATCH_CURRENCY,
                thresholds=options["thresholds"],
                basis=options["basis"],
                service=options["service"],
                tag_value=options["tag_value"],
                tenant=tenant,
                sns_topic_arn=options["sns_topic"],
                emails=emails,
                pass_through=options["pass_through"],
                markup_percent=options["markup"],
            )
        except ValidationError as exc:
            raise CommandError(validation_error_message(exc)) from None
        self.stdout.write(
            f"budget {budget.pk}: {budget.name}, {budget.amount:.2f} {budget.currency} a month, "
            f"{budget.scope_label}, thresholds {budget.thresholds_label}"
            + (
                f", pass-through to {budget.tenant.slug} (+{budget.markup_percent.normalize():f}%)"
                if budget.pass_through
                else ""
            )
        )
