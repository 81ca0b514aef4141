from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from .models import Order
from .tasks import mark_done


@csrf_exempt
def create_order(request: HttpRequest) -> JsonResponse:
    with transaction.atomic():
        order = Order.objects.create(item=request.POST.get("item", "thing"))
        key = mark_done.enqueue(order.pk)
    return JsonResponse({"order": order.pk, "key": key})
