"""Found by autodiscovery."""

from datetime import timedelta

from django.tasks import task as django_task

import docket_django
from docket import Progress

from .models import Order


@docket_django.task
def mark_done(order_id: int) -> str:
    order = Order.objects.get(pk=order_id)
    order.status = "done"
    order.save()
    return order.item


@docket_django.task(key="confirm-{order_id}", retry=2)
async def confirm(order_id: int) -> None:
    order = await Order.objects.aget(pk=order_id)
    order.status = "confirmed"
    await order.asave()


@docket_django.task(timeout=timedelta(seconds=30))
async def slow(seconds: float, progress: Progress = Progress()) -> None:
    import asyncio

    await progress.set_total(10)
    for _ in range(10):
        await asyncio.sleep(seconds / 10)
        await progress.increment()


@docket_django.task(perpetual=timedelta(hours=1))
def cleanup() -> None:
    Order.objects.filter(status="expired").delete()


def listed_task(x: int) -> int:
    return x * 2


docket_tasks = [listed_task]


# A django.tasks task in an autodiscovered module: workers register it by name at startup.
@django_task
def write_receipt(order_id: int) -> str:
    return f"receipt {order_id}"
