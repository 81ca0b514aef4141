"""docket-native tasks, found by autodiscovery (every installed app's tasks.py)."""

from datetime import timedelta

from django.utils import timezone

import docket_django

from .models import Order


@docket_django.task(retry=3, retry_delay=5, key="confirm-{order_id}")
def confirm_order(order_id: int) -> None:
    """A plain def task using the ORM: it runs in a worker thread, like a request."""
    order = Order.objects.get(pk=order_id)
    order.status = "confirmed"
    order.save(update_fields=["status"])


@docket_django.task(perpetual=timedelta(minutes=10))
def cleanup_abandoned_orders() -> None:
    """Perpetual: every worker keeps it scheduled, it runs every 10 minutes."""
    cutoff = timezone.now() - timedelta(days=1)
    Order.objects.filter(status="placed", created__lt=cutoff).update(status="abandoned")
