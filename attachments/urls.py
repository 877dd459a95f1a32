from django.urls import path

app_name = "attachments"
urlpatterns: list = []
