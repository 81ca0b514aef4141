"""django.tasks tasks (not autodiscovered: django.tasks imports them by path)."""

from django.tasks import task

from .models import Order


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def fail(message: str) -> None:
    raise ValueError(message)


@task(takes_context=True)
def with_context(context, x: int) -> dict:  # type: ignore[no-untyped-def]
    return {"attempt": context.attempt, "id": context.task_result.id, "x": x}


@task
async def async_add(a: int, b: int) -> int:
    return a + b


@task
def touch_order(order_id: int) -> str:
    order = Order.objects.get(pk=order_id)
    order.note = "touched"
    order.save()
    return order.item


@task(queue_name="reports")
def report() -> str:
    return "report"
