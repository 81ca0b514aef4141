"""A task written against Django's own Tasks framework (django.tasks)."""

from django.tasks import task

from .models import Order


@task
def write_receipt(order_id: int) -> str:
    order = Order.objects.get(pk=order_id)
    order.receipt = f"Receipt for order {order.pk}: one {order.item}"
    order.save(update_fields=["receipt"])
    return order.receipt
