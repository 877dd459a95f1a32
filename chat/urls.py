from django.urls import path

from chat import views

app_name = "chat"
urlpatterns = [
    path("", views.home, name="home"),
    path("model-indicator", views.model_indicator, name="model_indicator"),
    path("c/<str:session_id>/", views.conversation, name="conversation"),
    path("c/<str:session_id>/older", views.older_messages, name="older"),
    path("c/<str:session_id>/rename", views.rename, name="rename"),
    path("c/<str:session_id>/delete", views.delete, name="delete"),
    path(
        "c/<str:session_id>/messages/<int:message_id>/delete",
        views.delete_message,
        name="delete_message",
    ),
]
