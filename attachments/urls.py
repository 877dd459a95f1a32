from django.urls import path

from attachments import views

app_name = "attachments"
urlpatterns = [
    path("<str:public_id>/", views.download, name="download"),
]
