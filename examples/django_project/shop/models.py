from django.db import models


class Order(models.Model):
    item = models.CharField(max_length=100)
    status = models.CharField(max_length=20, default="placed")
    created = models.DateTimeField(auto_now_add=True)
    receipt = models.TextField(blank=True, default="")
