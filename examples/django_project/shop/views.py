from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .jobs import write_receipt
from .models import Order
from .tasks import confirm_order


@csrf_exempt
@require_POST
def place_order(request: HttpRequest) -> JsonResponse:
    with transaction.atomic():
        order = Order.objects.create(item=request.POST.get("item", "teapot"))
        # Both wait for the commit: a rollback would enqueue nothing. The key and the
        # result id are known right away.
        key = confirm_order.enqueue(order_id=order.pk)
        receipt = write_receipt.enqueue(order.pk)
    return JsonResponse({"order": order.pk, "task_key": key, "receipt_result": receipt.id})


def order_status(request: HttpRequest, order_id: int) -> JsonResponse:
    order = get_object_or_404(Order, pk=order_id)
    result_id = request.GET.get("receipt_result")
    body = {"order": order.pk, "status": order.status, "receipt": order.receipt}
    if result_id:
        body["receipt_task"] = write_receipt.get_result(result_id).status
    return JsonResponse(body)
